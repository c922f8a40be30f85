"""The outbox: leases, fencing, retries, requeue — on SQLite and PostgreSQL."""

# ruff: noqa: F811  (pytest fixtures imported from tests.store_backends)

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import cast

import pytest

from caller_engine.calls.models import AgentOverrides, CallRecord, StatusEvent
from caller_engine.calls.result import CallResult
from caller_engine.calls.service import CallService
from caller_engine.calls.sql_store import SqlCallStore
from caller_engine.results.outbox import NoResult, NoUrl
from caller_engine.telephony.rest import TwilioGateway
from tests.conftest import make_settings
from tests.store_backends import Database, FakeClock, clock, db, store  # noqa: F401

URL = "https://orch.example/results"


async def _queued(store: SqlCallStore, callback_id: str, url: str | None = URL) -> None:
    record = CallRecord(
        callback_id=callback_id, to="+15551234567", record=False, agent=AgentOverrides()
    )
    await store.create(record)
    result = CallResult(callbackId=callback_id, callSid=None, status="busy")
    assert await store.save_result(result, source="record", default_url=url)


async def test_claim_leases_and_counts_attempts(store: SqlCallStore, clock: FakeClock) -> None:
    await _queued(store, "cb-1")
    [claim] = await store.outbox.claim("a", lease=30, limit=10)
    assert claim.attempt == 1 and claim.url == URL and b'"status":"busy"' in claim.payload
    assert await store.outbox.claim("b", lease=30, limit=10) == []
    record = await store.get("cb-1")
    assert record is not None and record.delivery is not None
    assert record.delivery.state == "delivering" and record.delivery.attempts == 1


async def test_expired_lease_is_taken_over_and_the_old_owner_is_fenced(
    store: SqlCallStore, clock: FakeClock
) -> None:
    await _queued(store, "cb-1")
    [stale] = await store.outbox.claim("crashed", lease=30, limit=10)
    clock.advance(29)
    assert await store.outbox.claim("b", lease=30, limit=10) == []
    clock.advance(2)
    [fresh] = await store.outbox.claim("b", lease=30, limit=10)
    assert fresh.attempt == 2
    assert not await store.outbox.succeeded(stale, 200)
    assert await store.outbox.succeeded(fresh, 200)
    record = await store.get("cb-1")
    assert record is not None and record.delivery is not None
    assert record.delivery.state == "delivered" and record.delivery.attempts == 2
    assert record.delivery.delivered_at == clock.now and record.delivery.last_status == 200


async def test_retry_waits_until_due_and_failure_is_final(
    store: SqlCallStore, clock: FakeClock
) -> None:
    await _queued(store, "cb-1")
    [first] = await store.outbox.claim("a", 30, 10)
    when = clock.now + timedelta(seconds=10)
    assert await store.outbox.retry_at(first, when, 503, "HTTP 503: busy")
    assert await store.outbox.next_due() == when
    record = await store.get("cb-1")
    assert record is not None and record.delivery is not None
    assert record.delivery.state == "pending" and record.delivery.last_error == "HTTP 503: busy"
    assert record.delivery.next_attempt_at == when
    clock.advance(9)
    assert await store.outbox.claim("a", 30, 10) == []
    clock.advance(1)
    [second] = await store.outbox.claim("a", 30, 10)
    assert await store.outbox.failed(second, 400, "HTTP 400: bad")
    clock.advance(3600)
    assert await store.outbox.claim("a", 30, 10) == []
    assert await store.outbox.next_due() is None
    record = await store.get("cb-1")
    assert record is not None and record.delivery is not None
    assert record.delivery.state == "failed" and record.delivery.last_status == 400


async def test_concurrent_claimers_take_disjoint_rows(
    store: SqlCallStore, db: Database, clock: FakeClock
) -> None:
    for i in range(20):
        await _queued(store, f"cb-{i}")
    others = [await db.open_store(clock=clock) for _ in range(3)]
    try:
        for s in others:  # connect first, so that the claims below really overlap
            await s.outbox.next_due()
        batches = await asyncio.gather(
            *(s.outbox.claim(f"owner-{n}", 30, 20) for n, s in enumerate([store, *others]))
        )
    finally:
        for s in others:
            await s.close()
    claimed = [c.callback_id for batch in batches for c in batch]
    assert sorted(claimed) == sorted(f"cb-{i}" for i in range(20))


async def test_release_gives_leases_back(store: SqlCallStore) -> None:
    await _queued(store, "cb-1")
    await _queued(store, "cb-2")
    await store.outbox.claim("leaving", 30, 10)
    assert await store.outbox.release("leaving") == 2
    assert len(await store.outbox.claim("other", 30, 10)) == 2


async def test_requeue_resends_with_a_fresh_period(store: SqlCallStore, clock: FakeClock) -> None:
    await _queued(store, "cb-1")
    [claim] = await store.outbox.claim("a", 30, 10)
    await store.outbox.failed(claim, None, "gave up: refused")
    clock.advance(100)
    state = await store.outbox.requeue("cb-1", None)
    assert state.state == "pending" and state.enqueued_at == clock.now and state.attempts == 1
    [again] = await store.outbox.claim("a", 30, 10)
    assert again.attempt == 2 and again.url == URL
    await store.outbox.succeeded(again, 200)
    moved = await store.outbox.requeue("cb-1", None, url="https://elsewhere.example/r")
    assert moved.url == "https://elsewhere.example/r"


async def test_requeue_without_result_or_url_says_why(store: SqlCallStore) -> None:
    record = CallRecord(callback_id="cb-x", to="+15551234567", record=False, agent=AgentOverrides())
    await store.create(record)
    with pytest.raises(NoResult):
        await store.outbox.requeue("cb-x", URL)
    with pytest.raises(NoResult):
        await store.outbox.requeue("cb-unknown", URL)
    await _queued(store, "cb-y", url=None)
    with pytest.raises(NoUrl):
        await store.outbox.requeue("cb-y", None)
    state = await store.outbox.requeue("cb-y", URL)
    assert state.url == URL and state.attempts == 0


async def test_calls_missing_their_result_are_found(store: SqlCallStore, clock: FakeClock) -> None:
    for cb in ("streamed", "no-stream", "has-result", "still-live"):
        record = CallRecord(callback_id=cb, to="+15551234567", record=False, agent=AgentOverrides())
        await store.create(record)
        await store.dialed(cb, "CA-" + cb, "queued")
    for cb in ("streamed", "has-result", "still-live"):
        await store.stream_started(cb, "MZ-" + cb)
    for cb in ("streamed", "no-stream", "has-result"):
        await store.add_status("CA-" + cb, StatusEvent("completed", 5, "", {}))
    await store.save_result(CallResult(callbackId="has-result", callSid=None, status="completed"))
    assert await store.outbox.calls_missing_result(clock.now - timedelta(seconds=1), 10) == []
    clock.advance(60)
    missing = await store.outbox.calls_missing_result(clock.now - timedelta(seconds=30), 10)
    assert sorted(r.callback_id for r in missing) == ["no-stream", "streamed"]


async def test_the_delivery_worker_is_woken_only_when_a_delivery_was_queued(
    store: SqlCallStore,
) -> None:
    service = CallService(make_settings(), cast(TwilioGateway, None), store)
    woken: list[str] = []
    service.on_delivery_queued(lambda: woken.append("wake"))
    for callback_id, url in (("cb-none", None), ("cb-own", URL)):
        record = CallRecord(
            callback_id=callback_id,
            to="+15551234567",
            record=False,
            agent=AgentOverrides(),
            result_webhook_url=url,
        )
        await store.create(record)
    assert await service.finish(CallResult(callbackId="cb-none", callSid=None, status="busy"))
    assert woken == []  # kept, with nowhere to deliver it
    assert await service.finish(CallResult(callbackId="cb-own", callSid=None, status="busy"))
    assert woken == ["wake"]
    assert not await service.finish(CallResult(callbackId="cb-own", callSid=None, status="busy"))
    assert woken == ["wake"]
