"""The SQL call store on SQLite and (with TEST_DATABASE_URL) PostgreSQL."""

# ruff: noqa: F811  (pytest fixtures imported from tests.store_backends)

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ClauseElement

from caller_engine.calls import sql_prepared, sql_store
from caller_engine.calls.migrations import LATEST, current_version, upgrade
from caller_engine.calls.models import AgentOverrides, CallRecord, StatusEvent
from caller_engine.calls.result import CallResult
from caller_engine.calls.schema import metadata
from caller_engine.calls.sql_prepared import prepared
from caller_engine.calls.sql_store import SqlCallStore
from caller_engine.calls.store import DuplicateCall, Saved
from tests.store_backends import Database, FakeClock, clock, db, store  # noqa: F401


def _record(callback_id: str = "cb-1", to: str = "+15551234567", **kw: object) -> CallRecord:
    return CallRecord(
        callback_id=callback_id,
        to=to,
        record=False,
        agent=AgentOverrides(voice="cedar", metadata={"crm": 7}),
        **kw,  # type: ignore[arg-type]
    )


def _event(status: str, seq: int | None, **fields: str) -> StatusEvent:
    return StatusEvent(status=status, sequence=seq, timestamp="", fields=fields)


async def test_record_round_trips_and_survives_reopening(store: SqlCallStore, db: Database) -> None:
    await store.create(_record(result_webhook_url="https://orch.example/r"))
    await store.dialed("cb-1", "CA1", "queued")
    await store.add_status("CA1", _event("in-progress", 2))
    await store.set_answered_by("CA1", "human")
    await store.stream_started("cb-1", "MZ1")
    await store.stream_stopped("cb-1")
    await store.close()
    reopened = await db.open_store()
    try:
        record = await reopened.get("cb-1")
        assert record is not None
        assert record.call_sid == "CA1" and record.status == "in-progress"
        assert record.agent.voice == "cedar" and record.agent.metadata == {"crm": 7}
        assert record.answered_by == "human" and record.stream_sid == "MZ1"
        assert record.result_webhook_url == "https://orch.example/r"
        for at in (record.created_at, record.answered_at, record.stream_started_at):
            assert at is not None and at.utcoffset() == timedelta(0)
        assert record.stream_stopped_at is not None
        assert (await reopened.find_by_sid("CA1")) is not None
        assert await reopened.find_by_sid("CA-unknown") is None
    finally:
        await reopened.close()


async def test_duplicate_create_raises_with_the_existing_record(store: SqlCallStore) -> None:
    await store.create(_record())
    await store.dialed("cb-1", "CA1", "queued")
    with pytest.raises(DuplicateCall) as dup:
        await store.create(_record(to="+15557654321"))
    assert dup.value.existing.call_sid == "CA1" and dup.value.existing.to == "+15551234567"


async def test_racing_creates_admit_exactly_one(store: SqlCallStore) -> None:
    outcomes = await asyncio.gather(
        *(store.create(_record("cb-race")) for _ in range(12)), return_exceptions=True
    )
    assert sum(o is None for o in outcomes) == 1
    assert all(isinstance(o, DuplicateCall) for o in outcomes if o is not None)


async def test_failed_dial_is_taken_over_by_exactly_one_retry(store: SqlCallStore) -> None:
    await store.create(_record())
    await store.dial_failed("cb-1", {"code": 20503, "message": "down"})
    failed = await store.get("cb-1")
    assert failed is not None and failed.status == "dial-failed" and failed.ended_at
    outcomes = await asyncio.gather(
        *(store.create(_record()) for _ in range(8)), return_exceptions=True
    )
    assert sum(o is None for o in outcomes) == 1
    retried = await store.get("cb-1")
    assert retried is not None and retried.status == "pending"
    assert retried.error is None and retried.ended_at is None


async def test_out_of_order_and_duplicate_status_callbacks(store: SqlCallStore) -> None:
    await store.create(_record())
    await store.dialed("cb-1", "CA1", "queued")
    for status, seq in [
        ("ringing", 1),
        ("completed", 3),
        ("initiated", 0),
        ("in-progress", 2),
        ("completed", 3),
        ("ringing", 1),
    ]:
        extra = {"CallDuration": "42", "RecordingSid": "RE1"} if status == "completed" else {}
        await store.add_status("CA1", _event(status, seq, **extra))
    record = await store.get("cb-1")
    assert record is not None
    assert [e.status for e in record.status_history] == [
        "initiated",
        "ringing",
        "in-progress",
        "completed",
    ]
    assert record.status == "completed" and record.duration == 42
    assert record.recording_sid == "RE1" and record.ended_at and record.answered_at


async def test_concurrent_callbacks_through_two_stores_lose_nothing(
    store: SqlCallStore, db: Database
) -> None:
    other = await db.open_store()
    try:
        await store.create(_record())
        await store.dialed("cb-1", "CA1", "queued")
        events = [_event(s, i) for i, s in enumerate(["initiated", "ringing", "in-progress"])]
        events += [_event("completed", 3, CallDuration="9")]
        await asyncio.gather(
            *((store if i % 2 else other).add_status("CA1", e) for i, e in enumerate(events)),
            other.set_answered_by("CA1", "human"),
            store.stream_started("cb-1", "MZ1"),
        )
        record = await other.get("cb-1")
        assert record is not None
        assert len(record.status_history) == 4 and record.status == "completed"
        assert record.answered_by == "human" and record.stream_sid == "MZ1"
    finally:
        await other.close()


async def test_status_before_the_call_sid_is_stored_is_matched_by_callback_id(
    store: SqlCallStore,
) -> None:
    await store.create(_record())
    assert await store.add_status("CA1", _event("initiated", 0)) is None
    record = await store.add_status("CA1", _event("initiated", 0), callback_id="cb-1")
    assert record is not None and record.call_sid == "CA1"
    await store.dialed("cb-1", "CA1", "queued")
    stored = await store.get("cb-1")
    assert stored is not None and stored.status == "initiated"
    assert [e.status for e in stored.status_history] == ["initiated"]


async def test_the_callback_id_of_the_url_names_the_call_and_attaches_its_sid(
    store: SqlCallStore,
) -> None:
    await store.create(_record())
    record = await store.set_answered_by("CA1", "human", callback_id="cb-1")
    assert record is not None and record.call_sid == "CA1" and record.answered_by == "human"
    await store.dialed("cb-1", "CA1", "queued")
    assert await store.add_status("CA1", _event("ringing", 1), callback_id="cb-1") is not None
    # A callback whose CallSid is not the call's goes by its CallSid alone.
    await store.create(_record("cb-2"))
    await store.dialed("cb-2", "CA2", "queued")
    other = await store.add_status("CA1", _event("completed", 3), callback_id="cb-2")
    assert other is not None and other.callback_id == "cb-1" and other.status == "completed"
    assert await store.add_status("CA9", _event("completed", 3), callback_id="cb-2") is None
    second = await store.get("cb-2")
    assert second is not None and second.status_history == [] and second.call_sid == "CA2"


def _result(callback_id: str = "cb-1", status: str = "completed", text: str = "") -> CallResult:
    return CallResult.model_validate(
        {"callbackId": callback_id, "callSid": "CA1", "status": status, "fullText": text}
    )


async def test_result_is_saved_with_its_delivery_in_one_step(store: SqlCallStore) -> None:
    await store.create(_record())
    assert await store.save_result(_result(text="hello"), default_url="https://o.example/r")
    record = await store.get("cb-1")
    assert record is not None and record.result is not None
    assert record.result.fullText == "hello" and record.result_source == "bridge"
    assert record.delivery is not None
    assert record.delivery.state == "pending" and record.delivery.url == "https://o.example/r"
    assert record.delivery.attempts == 0


async def test_per_call_url_wins_and_no_url_means_no_delivery(store: SqlCallStore) -> None:
    await store.create(_record("cb-own", result_webhook_url="https://own.example/hook"))
    await store.create(_record("cb-none"))
    saved = await store.save_result(_result("cb-own"), default_url="https://o.example/r")
    assert saved is Saved.QUEUED
    assert await store.save_result(_result("cb-none"), default_url=None) is Saved.KEPT
    own = await store.get("cb-own")
    none = await store.get("cb-none")
    assert own is not None and own.delivery is not None
    assert own.delivery.url == "https://own.example/hook"
    assert none is not None and none.result is not None and none.delivery is None
    assert await store.save_result(_result("cb-unknown"), default_url=None) is Saved.DROPPED


async def test_a_result_is_completed_from_the_record_as_it_is_stored(
    store: SqlCallStore,
) -> None:
    await store.create(_record())
    await store.dialed("cb-1", "CA1", "queued")
    await store.add_status("CA1", _event("in-progress", 1), callback_id="cb-1")
    await store.set_answered_by("CA1", "machine_end_beep", callback_id="cb-1")
    result = _result()  # the bridge saw neither the callbacks nor the verdict
    assert await store.save_result(result) is Saved.KEPT
    assert result.status == "voicemail" and result.answeredBy == "machine_end_beep"
    assert [e["status"] for e in result.statusHistory] == ["in-progress"]
    record = await store.get("cb-1")
    assert record is not None and record.result == result


async def test_a_change_writes_only_the_columns_it_changed(
    store: SqlCallStore, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.create(_record())
    await store.dialed("cb-1", "CA1", "queued")
    updates: list[str] = []

    def seen(conn: Connection, statement: ClauseElement, values: Mapping[str, Any]) -> int:
        sql = prepared(statement, conn.dialect).sql
        if sql.lstrip().upper().startswith("UPDATE CALLS"):
            updates.append(sql)
        return sql_prepared.execute(conn, statement, values)

    monkeypatch.setattr(sql_store, "execute", seen)
    await store.stream_started("cb-1", "MZ1")
    await store.add_status("CA1", _event("in-progress", 1), callback_id="cb-1")
    monkeypatch.undo()
    started, status = (u.split(" WHERE ")[0] for u in updates)
    assert "stream_sid" in started and "stream_started_at" in started
    assert "agent" not in started and "status" not in started
    assert "status_history" in status and "answered_at" in status
    assert "agent" not in status and "stream_sid" not in status
    record = await store.get("cb-1")
    assert record is not None and record.agent.voice == "cedar"
    assert record.stream_sid == "MZ1" and record.status == "in-progress"


async def test_one_result_per_call(store: SqlCallStore, clock: FakeClock) -> None:
    url = "https://o.example/r"
    for cb in ("cb-a", "cb-b", "cb-c"):
        await store.create(_record(cb))
    # A bridge result replaces a record-built one while no attempt has begun.
    assert await store.save_result(_result("cb-a", "busy"), source="record", default_url=url)
    assert await store.save_result(_result("cb-a", text="full"), default_url=url)
    a = await store.get("cb-a")
    assert a is not None and a.result is not None and a.result.fullText == "full"
    [claim] = await store.outbox.claim("me", 30, 10, "cb-a")
    assert b'"fullText":"full"' in claim.payload
    # Once an attempt has begun, nothing replaces it.
    assert await store.save_result(_result("cb-b", "busy"), source="record", default_url=url)
    await store.outbox.claim("me", 30, 10, "cb-b")
    assert not await store.save_result(_result("cb-b", text="late"), default_url=url)
    b = await store.get("cb-b")
    assert b is not None and b.result is not None and b.result.status == "busy"
    # A record-built result never replaces the bridge's, nor a second bridge result the first.
    assert await store.save_result(_result("cb-c", text="first"), default_url=url)
    assert not await store.save_result(_result("cb-c", "busy"), source="record", default_url=url)
    assert not await store.save_result(_result("cb-c", text="second"), default_url=url)
    c = await store.get("cb-c")
    assert c is not None and c.result is not None and c.result.fullText == "first"


async def test_listing_pages_filters_and_orders(store: SqlCallStore, clock: FakeClock) -> None:
    for i in range(5):
        clock.advance(1)
        await store.create(_record(f"cb-{i}"))
    await store.dialed("cb-3", "CA3", "queued")
    await store.add_status("CA3", _event("busy", 2))
    first = await store.list_calls(limit=2)
    assert [r.callback_id for r in first] == ["cb-4", "cb-3"]
    last = first[-1]
    second = await store.list_calls(limit=2, before=(last.created_at, last.callback_id))
    assert [r.callback_id for r in second] == ["cb-2", "cb-1"]
    busy = await store.list_calls(statuses=["busy", "no-answer"])
    assert [r.callback_id for r in busy] == ["cb-3"]
    since = await store.list_calls(since=first[1].created_at)
    assert [r.callback_id for r in since] == ["cb-4", "cb-3"]


async def test_migrations_are_idempotent_and_match_the_schema(store: SqlCallStore) -> None:
    assert await upgrade(store.db) == LATEST
    assert await current_version(store.db) == LATEST

    def columns(sync_conn: Connection) -> dict[str, set[str]]:
        inspector = inspect(sync_conn)
        return {t: {c["name"] for c in inspector.get_columns(t)} for t in metadata.tables}

    found = await store.db.read(columns)
    expected = {name: {c.name for c in table.columns} for name, table in metadata.tables.items()}
    assert found == expected


async def test_instances_starting_together_migrate_once(db: Database) -> None:
    stores = await asyncio.gather(*(db.open_store() for _ in range(3)))
    try:
        assert {await current_version(s.db) for s in stores} == {LATEST}
    finally:
        for s in stores:
            await s.close()


async def test_an_in_memory_sqlite_database_is_one_database() -> None:
    """Reads and writes share the one connection an in-memory database lives in."""
    store = await SqlCallStore.open("sqlite:///:memory:")
    try:
        await store.create(_record("cb-mem"))
        found = await store.get("cb-mem")
        assert found is not None and found.callback_id == "cb-mem"
        assert [r.callback_id for r in await store.list_calls()] == ["cb-mem"]
    finally:
        await store.close()
