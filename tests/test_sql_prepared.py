"""Prepared statements on the driver's cursor read and write what SQLAlchemy would, and fail
the way SQLAlchemy's own execution does (SQLite and, with TEST_DATABASE_URL, PostgreSQL)."""

# ruff: noqa: F811  (pytest fixtures imported from tests.store_backends)

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from caller_engine.calls.models import AgentOverrides, CallRecord
from caller_engine.calls.schema import calls, deliveries
from caller_engine.calls.sql_prepared import execute, fetch_one, prepared
from caller_engine.calls.sql_store import SqlCallStore
from tests.store_backends import Database, FakeClock, clock, db, store  # noqa: F401

_BY_ID = select(calls).where(calls.c.callback_id == bindparam("key"))
_QUEUE = deliveries.insert().values({c.name: bindparam(c.name) for c in deliveries.c})
_DELIVERY = select(deliveries).where(deliveries.c.callback_id == bindparam("key"))


def _delivery(at: datetime) -> dict[str, object]:
    return dict.fromkeys(deliveries.c.keys()) | {
        "callback_id": "cb-1",
        "url": "https://example.com/hook",
        "payload": b'{"ok":true}',
        "state": "pending",
        "attempts": 0,
        "enqueued_at": at,
        "next_attempt_at": at,
    }


async def test_a_row_reads_as_sqlalchemy_reads_it(store: SqlCallStore) -> None:
    record = CallRecord("cb-1", "+15551234567", True, AgentOverrides(voice="cedar"))
    record.answered_at = datetime(2030, 1, 1, 12, 0, 5, tzinfo=UTC)
    await store.create(record)

    def both(conn: Connection) -> tuple[object, object]:
        ours = fetch_one(conn, _BY_ID, {"key": "cb-1"})
        theirs = conn.execute(_BY_ID, {"key": "cb-1"}).one()._asdict()
        return ours, theirs

    ours, theirs = await store.db.read(both)
    assert ours == theirs
    assert isinstance(ours, dict) and ours["record"] is True
    assert ours["agent"]["voice"] == "cedar" and ours["answered_at"] == record.answered_at
    assert await store.db.read(lambda conn: fetch_one(conn, _BY_ID, {"key": "none"})) is None


async def test_a_write_binds_as_sqlalchemy_binds_and_counts_rows(store: SqlCallStore) -> None:
    await store.create(CallRecord("cb-1", "+15551234567", False, AgentOverrides()))
    at = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert await store.db.write(lambda conn: execute(conn, _QUEUE, _delivery(at))) == 1
    row = await store.db.read(lambda conn: conn.execute(_DELIVERY, {"key": "cb-1"}).one())
    assert row.payload == b'{"ok":true}' and row.enqueued_at == at and row.attempts == 0


async def test_a_driver_error_is_raised_as_sqlalchemys(store: SqlCallStore) -> None:
    await store.create(CallRecord("cb-1", "+15551234567", False, AgentOverrides()))
    at = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    await store.db.write(lambda conn: execute(conn, _QUEUE, _delivery(at)))
    with pytest.raises(sa_exc.IntegrityError) as raised:
        await store.db.write(lambda conn: execute(conn, _QUEUE, _delivery(at)))
    assert raised.value.orig is not None and raised.value.statement is not None
    # The failed transaction was rolled back; the connection goes on serving.
    row = await store.db.read(lambda conn: fetch_one(conn, _DELIVERY, {"key": "cb-1"}))
    assert row is not None and row["state"] == "pending"


async def test_a_statement_is_compiled_once_per_dialect(store: SqlCallStore) -> None:
    first = await store.db.read(lambda conn: prepared(_BY_ID, conn.dialect))
    again = await store.db.read(lambda conn: prepared(_BY_ID, conn.dialect))
    assert first is again and "callback_id" in first.sql
