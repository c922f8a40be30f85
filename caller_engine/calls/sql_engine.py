"""DATABASE_URL to a `Database` that runs whole transactions, one per store operation.

A store operation is a plain function of a SQLAlchemy `Connection` (a few statements, no
awaits), run in one transaction:

- SQLite: on one thread of the database's own, with the standard `sqlite3` driver. The
  event loop hands over the whole operation and gets its answer back: one thread hop per
  operation, where an asyncio driver costs one per statement, begin and commit (a change of
  a call was 12). That thread serializes this process's operations, so nothing here waits on
  SQLite's busy timeout but another process holding the file. WAL journal; writes open with
  BEGIN IMMEDIATE so read-modify-write sequences are serialized across processes too; reads
  take a deferred BEGIN (in WAL mode readers take no lock).
- PostgreSQL: asyncpg through SQLAlchemy's asyncio extension; an optional schema is put
  first on the search_path (used to isolate tests).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

SQLITE_BUSY_TIMEOUT_MS = 10_000
WAL_ATTEMPTS = 100

T = TypeVar("T")
Operation = Callable[[Connection], T]


class DatabaseUrlError(ValueError):
    """DATABASE_URL names no supported database."""


def driver_url(url: str) -> URL:
    """`sqlite:///path` → sqlite+pysqlite, `postgresql://` or `postgres://` →
    postgresql+asyncpg. URLs naming `aiosqlite` (accepted by earlier releases) or one of
    these drivers are kept working; libpq's `sslmode` becomes asyncpg's `ssl`."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise DatabaseUrlError(f"not a database URL: {url!r}") from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite" and driver in ("", "pysqlite", "aiosqlite"):
        return parsed.set(drivername="sqlite+pysqlite")
    if backend in ("postgresql", "postgres") and driver in ("", "asyncpg"):
        query = dict(parsed.query)
        if "sslmode" in query:
            query["ssl"] = query.pop("sslmode")
        return parsed.set(drivername="postgresql+asyncpg", query=query)
    raise DatabaseUrlError(
        f"unsupported database {parsed.drivername!r}: use sqlite:///path or postgresql://…"
    )


class Database(Protocol):
    """Runs store operations, each in a transaction of its own."""

    dialect: str  # "sqlite" or "postgresql"

    async def read(self, operation: Operation[T]) -> T:
        """Run `operation` in a read transaction."""
        ...

    async def write(self, operation: Operation[T]) -> T:
        """Run `operation` in a write transaction, committed when it returns."""
        ...

    async def prepare(self) -> None:
        """Once per process before first use."""
        ...

    async def dispose(self) -> None: ...


def open_database(url: str, *, schema: str | None = None) -> Database:
    target = driver_url(url)
    if target.get_backend_name() == "postgresql":
        return PostgresDatabase(target, schema)
    return SqliteDatabase(target)


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


_JSON = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}
_WRITE = "caller_engine_write"


class SqliteDatabase:
    dialect = "sqlite"

    def __init__(self, url: URL) -> None:
        self.url = url
        self.engine: Engine = create_sync_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            **_JSON,
        )
        _serialize(self.engine)
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        # One connection for reads and one for writes, used by the thread alone and kept
        # open between operations; a connection that saw an error is replaced. An in-memory
        # database lives in its connection: there, reads share the writer's.
        self._connections: dict[bool, Connection] = {}
        self._in_memory = url.database in (None, "", ":memory:")

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        if self._thread is None:  # first use, or first use after dispose()
            self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sqlite")
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    async def read(self, operation: Operation[T]) -> T:
        return await self._run(self._transaction, operation, False)

    async def write(self, operation: Operation[T]) -> T:
        return await self._run(self._transaction, operation, True)

    def _transaction(self, operation: Operation[T], write: bool) -> T:
        write = write or self._in_memory
        conn = self._connections.get(write)
        if conn is None:
            conn = self.engine.connect().execution_options(**{_WRITE: write})
            self._connections[write] = conn
        try:
            with conn.begin():
                return operation(conn)
        except BaseException:
            del self._connections[write]
            with contextlib.suppress(Exception):  # the operation's error is the one to raise
                conn.close()
            raise

    async def prepare(self) -> None:
        """Put the file in WAL mode (readers and the writer stop blocking each other). The
        mode is kept in the file. Switching needs a moment without other connections, so
        another process opening it at once is waited for."""
        if self._in_memory:
            return
        await self._run(self._wal)

    def _wal(self) -> None:
        for attempt in range(WAL_ATTEMPTS):
            raw = self.engine.raw_connection()
            try:
                driver: Any = raw.driver_connection
                driver.execute("PRAGMA journal_mode=WAL").close()
                return
            except sqlite3.OperationalError:
                if attempt == WAL_ATTEMPTS - 1:
                    raise
            finally:
                raw.close()
            time.sleep(0.05)

    async def dispose(self) -> None:
        """Close the connections and the thread; a later operation opens them again."""
        if self._thread is None:
            return
        thread, self._thread = self._thread, None
        await asyncio.get_running_loop().run_in_executor(thread, self._close)
        thread.shutdown(wait=False)

    def _close(self) -> None:
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()
        self.engine.dispose()


def _serialize(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (see the "begin" hook) instead of sqlite3.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # Reads run without BEGIN: each read operation is one statement, atomic on its own,
        # and in WAL mode it takes no lock.
        if conn.get_execution_options().get(_WRITE, True):
            conn.connection.driver_connection.execute("BEGIN IMMEDIATE").close()  # type: ignore[union-attr]


class PostgresDatabase:
    dialect = "postgresql"

    def __init__(self, url: URL, schema: str | None) -> None:
        # SQLAlchemy's asyncio extension loads its ORM: only deployments on PostgreSQL pay.
        from sqlalchemy.ext.asyncio import create_async_engine

        self.url = url
        settings = {"search_path": schema} if schema else {}
        self.engine: AsyncEngine = create_async_engine(
            url,
            connect_args={"server_settings": settings} if settings else {},
            pool_pre_ping=True,
            **_JSON,
        )

    async def read(self, operation: Operation[T]) -> T:
        async with self.engine.connect() as conn:
            return await conn.run_sync(operation)

    async def write(self, operation: Operation[T]) -> T:
        async with self.engine.begin() as conn:
            return await conn.run_sync(operation)

    async def prepare(self) -> None:
        return None

    async def dispose(self) -> None:
        await self.engine.dispose()
