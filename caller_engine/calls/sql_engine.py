"""DATABASE_URL to a `Database` that runs whole transactions, one per store operation.

A store operation is a plain function of a SQLAlchemy `Connection` (a few statements, no
awaits), run in one transaction:

- SQLite, with the standard `sqlite3` driver: on the event loop's thread. An operation is a
  few statements on a file in the page cache (tens to a couple of hundred microseconds, most
  of it Python that would hold the GIL on any thread), and with nothing awaited inside it, the
  process's operations never interleave. Handing each one to a thread of its own cost two
  context switches per operation, more than the operation itself on a server pinned to one
  core. What could block the loop is kept off it: the loop's connections never wait on the
  file (busy timeout 0) — when another process holds it, that operation and every one after
  it wait on the database's thread, with the full busy timeout, until none is waiting there;
  and the WAL is checkpointed (the step that writes and syncs the database file) on that
  thread every `CHECKPOINT_EVERY` writes, never by a commit on the loop. WAL journal; writes
  open with BEGIN IMMEDIATE so read-modify-write sequences are serialized across processes
  too; reads run without BEGIN (in WAL mode readers take no lock).
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
CHECKPOINT_EVERY = 200  # writes between two WAL checkpoints (each commit adds a few pages)

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
        # Connections by (on the thread?, for writes?), kept open between operations; one
        # that saw an error is replaced. An in-memory database lives in its connection:
        # there, every operation shares one, on the loop (no other process can hold it).
        self._connections: dict[tuple[bool, bool], Connection] = {}
        self._in_memory = url.database in (None, "", ":memory:")
        self._waiting = 0  # operations on (or queued for) the thread
        self._writes = 0  # since the last checkpoint
        self._checkpoint: asyncio.Future[None] | None = None

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._thread is None:  # first use, or first use after dispose()
            self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sqlite")
        return self._thread

    async def _run(self, operation: Operation[T], write: bool) -> T:
        if self._waiting == 0:
            try:
                return self._transaction(operation, write, threaded=False)
            except Exception as exc:
                if self._in_memory or not _busy(exc):
                    raise
        # Another process holds the file: wait for it on the thread, in order with the
        # operations that come while this one waits.
        self._waiting += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor(), self._transaction, operation, write, True
            )
        finally:
            self._waiting -= 1

    async def read(self, operation: Operation[T]) -> T:
        return await self._run(operation, False)

    async def write(self, operation: Operation[T]) -> T:
        result = await self._run(operation, True)
        self._writes += 1
        if self._writes >= CHECKPOINT_EVERY and not self._in_memory and self._checkpoint is None:
            self._writes = 0
            loop = asyncio.get_running_loop()
            self._checkpoint = loop.run_in_executor(self._executor(), self._wal_checkpoint)
            self._checkpoint.add_done_callback(self._checkpointed)
        return result

    def _transaction(self, operation: Operation[T], write: bool, threaded: bool) -> T:
        write = write or self._in_memory
        key = (threaded and not self._in_memory, write)
        conn = self._connections.get(key)
        if conn is None:
            conn = self.engine.connect().execution_options(**{_WRITE: write})
            # The loop's connections never wait on the file; the thread's wait their time.
            busy_ms = SQLITE_BUSY_TIMEOUT_MS if key[0] else 0
            driver: Any = conn.connection.driver_connection
            driver.execute(f"PRAGMA busy_timeout={busy_ms}").close()
            self._connections[key] = conn
        try:
            with conn.begin():
                return operation(conn)
        except BaseException:
            del self._connections[key]
            with contextlib.suppress(Exception):  # the operation's error is the one to raise
                conn.close()
            raise

    def _wal_checkpoint(self) -> None:
        """Copy the WAL into the database file, without waiting for readers or writers
        (PASSIVE); the next write starts the WAL over once it is all copied."""
        raw = self.engine.raw_connection()
        try:
            driver: Any = raw.driver_connection
            driver.execute("PRAGMA wal_checkpoint(PASSIVE)").close()
        finally:
            raw.close()

    def _checkpointed(self, future: asyncio.Future[None]) -> None:
        self._checkpoint = None
        if not future.cancelled() and future.exception() is not None:
            self._writes = CHECKPOINT_EVERY  # try again at the next write

    async def prepare(self) -> None:
        """Put the file in WAL mode (readers and the writer stop blocking each other). The
        mode is kept in the file. Switching needs a moment without other connections, so
        another process opening it at once is waited for (on the thread)."""
        if self._in_memory:
            return
        await asyncio.get_running_loop().run_in_executor(self._executor(), self._wal)

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
        if self._thread is not None:  # what is queued there ends first
            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().run_in_executor(self._thread, _nothing)
        if self._checkpoint is not None:
            with contextlib.suppress(Exception):
                await self._checkpoint
        for conn in self._connections.values():
            with contextlib.suppress(Exception):
                conn.close()
        self._connections.clear()
        self.engine.dispose()
        if self._thread is not None:
            thread, self._thread = self._thread, None
            thread.shutdown(wait=False)


def _nothing() -> None:
    return None


def _busy(exc: BaseException) -> bool:
    """Whether `exc` says another connection holds the database (SQLITE_BUSY/LOCKED)."""
    error = getattr(exc, "orig", None) or exc
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _serialize(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (see the "begin" hook) instead of sqlite3.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # Checkpoints run on the database's thread (SqliteDatabase.write), not in a commit.
        cursor.execute("PRAGMA wal_autocheckpoint=0")
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
