"""DATABASE_URL to an async SQLAlchemy engine (aiosqlite or asyncpg), set up per backend.

SQLite: WAL journal, a busy timeout, and every transaction opened with BEGIN IMMEDIATE so
read-modify-write sequences are serialized (also across processes sharing the file).
PostgreSQL: an optional schema is put first on the search_path (used to isolate tests).
"""

from __future__ import annotations

import asyncio
import sqlite3
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 10_000
WAL_ATTEMPTS = 100


class DatabaseUrlError(ValueError):
    """DATABASE_URL names no supported database."""


def async_url(url: str) -> URL:
    """`sqlite:///path` → sqlite+aiosqlite, `postgresql://` or `postgres://` → postgresql+asyncpg.

    URLs that already name one of these drivers are kept; libpq's `sslmode` becomes asyncpg's
    `ssl`.
    """
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise DatabaseUrlError(f"not a database URL: {url!r}") from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite" and driver in ("", "aiosqlite"):
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres") and driver in ("", "asyncpg"):
        query = dict(parsed.query)
        if "sslmode" in query:
            query["ssl"] = query.pop("sslmode")
        return parsed.set(drivername="postgresql+asyncpg", query=query)
    raise DatabaseUrlError(
        f"unsupported database {parsed.drivername!r}: use sqlite:///path or postgresql://…"
    )


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_engine(url: str, *, schema: str | None = None) -> AsyncEngine:
    target = async_url(url)
    kwargs: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}
    if target.get_backend_name() == "postgresql":
        settings = {"search_path": schema} if schema else {}
        kwargs["connect_args"] = {"server_settings": settings} if settings else {}
        kwargs["pool_pre_ping"] = True
        return create_async_engine(target, **kwargs)
    kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    engine = create_async_engine(target, **kwargs)
    _serialize_sqlite(engine)
    return engine


async def prepare(engine: AsyncEngine) -> None:
    """Once per process before first use: put a SQLite file in WAL mode (readers and the
    writer stop blocking each other). The mode is kept in the file. Switching needs a moment
    without other connections, so another process opening it at once is waited for."""
    if not is_sqlite(engine) or engine.url.database in (None, "", ":memory:"):
        return
    for attempt in range(WAL_ATTEMPTS):
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            try:
                cursor = await driver.execute("PRAGMA journal_mode=WAL")
                await cursor.close()
                return
            except sqlite3.OperationalError:
                if attempt == WAL_ATTEMPTS - 1:
                    raise
        await asyncio.sleep(0.05)


def _serialize_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (see the "begin" hook) instead of sqlite3.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Connection) -> None:
        deferred = conn.get_execution_options().get(_READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")


_READ_ONLY = "caller_engine_read_only"
_WRITERS: weakref.WeakKeyDictionary[AsyncEngine, asyncio.Lock] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for reads. On SQLite its transaction is deferred: in WAL mode readers
    take no lock, so they neither wait for writers nor make them wait."""
    async with engine.connect() as conn:
        if is_sqlite(engine):
            await conn.execution_options(**{_READ_ONLY: True})
        yield conn


@asynccontextmanager
async def writing(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A write transaction (committed on success). On SQLite the writers of this process
    queue on a lock of their own instead of on SQLite's busy timeout, which a busy event
    loop (the lock holder's next statement waits for its turn) could exhaust."""
    if not is_sqlite(engine):
        async with engine.begin() as conn:
            yield conn
        return
    lock = _WRITERS.setdefault(engine, asyncio.Lock())
    async with lock, engine.begin() as conn:
        yield conn
