"""SQLite operations run on the event loop's thread; what could block it does not."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection

from caller_engine.calls import sql_engine
from caller_engine.calls.sql_engine import SqliteDatabase, driver_url


async def _database(path: Path) -> SqliteDatabase:
    db = SqliteDatabase(driver_url(f"sqlite:///{path}"))
    await db.prepare()
    await db.write(lambda conn: conn.execute(text("CREATE TABLE t (n INTEGER)")))
    return db


def _insert(n: int) -> sql_engine.Operation[None]:
    def insert(conn: Connection) -> None:
        conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})

    return insert


def _rows_and_thread(conn: Connection) -> tuple[list[int], int]:
    rows = [int(n) for (n,) in conn.execute(text("SELECT n FROM t ORDER BY n"))]
    return rows, threading.get_ident()


async def test_operations_run_on_the_loop_thread(tmp_path: Path) -> None:
    db = await _database(tmp_path / "a.db")
    try:
        await db.write(_insert(1))
        rows, thread = await db.read(_rows_and_thread)
        assert rows == [1] and thread == threading.get_ident()
    finally:
        await db.dispose()


async def test_a_file_held_by_another_process_is_waited_for_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql_engine, "SQLITE_BUSY_TIMEOUT_MS", 5_000)
    db = await _database(tmp_path / "b.db")
    other = sqlite3.connect(tmp_path / "b.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process is writing
        first = asyncio.create_task(db.write(_insert(1)))
        ticks = 0
        for _ in range(10):  # the loop goes on while the write waits
            await asyncio.sleep(0.01)
            ticks += 1
        second = asyncio.create_task(db.write(_insert(2)))  # queued behind the first
        read = asyncio.create_task(db.read(_rows_and_thread))
        await asyncio.sleep(0.05)
        assert ticks == 10 and not first.done() and not second.done() and not read.done()
        other.execute("ROLLBACK")
        await asyncio.wait_for(asyncio.gather(first, second), 5)
        rows, thread = await read
        assert rows == [1, 2] and thread != threading.get_ident()  # in order, on the thread
        rows, thread = await db.read(_rows_and_thread)
        assert rows == [1, 2] and thread == threading.get_ident()  # back on the loop
    finally:
        other.close()
        await db.dispose()


async def test_the_wal_is_checkpointed_on_the_thread_not_by_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql_engine, "CHECKPOINT_EVERY", 4)
    path = tmp_path / "c.db"
    db = await _database(path)  # its CREATE TABLE is the first write

    def in_the_file() -> list[int]:
        """What the database file holds, the WAL left aside."""
        raw = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
        try:
            return [n for (n,) in raw.execute("SELECT n FROM t ORDER BY n")]
        except sqlite3.OperationalError:
            return []  # not even the table yet
        finally:
            raw.close()

    try:
        await db.write(_insert(1))
        await db.write(_insert(2))
        assert in_the_file() == [] and db._checkpoint is None  # committed to the WAL only
        await db.write(_insert(3))  # the fourth write: a checkpoint starts on the thread
        assert db._checkpoint is not None
        await db._checkpoint
        assert in_the_file() == [1, 2, 3]
    finally:
        await db.dispose()
