"""The do-not-call list and the frequency cap, on SQLite and PostgreSQL, through the API."""

# ruff: noqa: F811  (pytest fixtures imported on purpose)

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from loguru import logger
from sqlalchemy import insert

from caller_engine.calls.models import AgentOverrides, CallRecord, DncEntry, StatusEvent, utcnow
from caller_engine.calls.schema import do_not_call
from caller_engine.calls.sql_engine import PostgresDatabase, SqliteDatabase, open_database
from caller_engine.calls.sql_store import SqlCallStore, _lock_number
from caller_engine.calls.store import DuplicateCall, MemoryCallStore
from caller_engine.guardrails.policy import Admission, CallRefused
from caller_engine.sim.twilio.rest import TwilioRestEmulator
from tests.conftest import API_KEY, Api
from tests.store_backends import Instances, db, instances  # noqa: F401

Twilio = tuple[TwilioRestEmulator, str]
NUMBER = "+15551234567"
KEY = {"X-API-Key": API_KEY}


async def _dnc(api: Api, method: str, number: str = NUMBER, **kwargs: Any) -> tuple[int, Any]:
    headers = {**KEY, **kwargs.pop("headers", {})}
    resp = await api.session.request(method, api.url(f"/dnc/{number}"), headers=headers, **kwargs)
    body = await resp.json() if resp.content_type == "application/json" else None
    return resp.status, body


async def _initiate(api: Api, callback_id: str, to: str = NUMBER) -> tuple[int, dict[str, Any]]:
    resp = await api.initiate({"callbackId": callback_id, "to": to})
    return resp.status, await resp.json()


async def test_listing_refuses_calls_until_removed(instances: Instances, twilio: Twilio) -> None:
    api = await instances.start()
    status, entry = await _dnc(api, "PUT", json={"reason": "asked by email"})
    assert status == 201
    assert entry["number"] == NUMBER and entry["source"] == "api"
    assert entry["reason"] == "asked by email" and entry["callbackId"] is None
    status, again = await _dnc(api, "PUT")
    assert status == 200 and again == entry  # listing twice keeps the first entry
    status, body = await _initiate(api, "cb-1")
    assert status == 403
    assert body["error"]["code"] == "do_not_call" and body["success"] is False
    assert twilio[0].requests == [] and await api.services.store.get("cb-1") is None
    assert (await _dnc(api, "GET"))[1] == entry
    assert (await _dnc(api, "DELETE"))[0] == 204
    assert (await _dnc(api, "DELETE"))[0] == 404
    assert (await _dnc(api, "GET"))[0] == 404
    assert (await _initiate(api, "cb-1"))[0] == 200
    assert len(twilio[0].calls) == 1


async def test_a_new_reason_replaces_the_old_one(instances: Instances) -> None:
    api = await instances.start()
    await _dnc(api, "PUT", json={"reason": "first", "callbackId": "crm-1"})
    status, entry = await _dnc(api, "PUT", json={"reason": "second"})
    assert status == 200 and entry["reason"] == "second" and entry["callbackId"] == "crm-1"


async def test_bad_numbers_bodies_and_keys(instances: Instances) -> None:
    api = await instances.start()
    status, body = await _dnc(api, "PUT", number="5551234567")
    assert status == 400 and body["error"]["code"] == "invalid_number"
    status, body = await _dnc(api, "PUT", json={"reason": "x" * 501})
    assert status == 422 and body["error"]["fields"][0]["field"] == "reason"
    status, body = await _dnc(api, "PUT", json={"nope": 1})
    assert status == 422
    status, body = await _dnc(
        api, "PUT", data="{oops", headers={**KEY, "Content-Type": "application/json"}
    )
    assert status == 400 and body["error"]["code"] == "invalid_json"
    resp = await api.session.put(api.url(f"/dnc/{NUMBER}"))
    assert resp.status == 401
    resp = await api.session.get(api.url("/dnc"))
    assert resp.status == 401
    # %2B is the URL-encoded +.
    assert (await _dnc(api, "PUT", number="%2B15550000001"))[0] == 201
    assert (await _dnc(api, "GET", number="+15550000001"))[0] == 200


async def test_listing_pages_in_number_order(instances: Instances) -> None:
    api = await instances.start()
    numbers = [f"+1555000000{i}" for i in (4, 1, 3, 0, 2)]
    for number in numbers:
        await _dnc(api, "PUT", number=number)
    seen: list[str] = []
    cursor = ""
    while True:
        resp = await api.session.get(
            api.url("/dnc?limit=2" + (f"&cursor={cursor}" if cursor else "")), headers=KEY
        )
        page = await resp.json()
        assert resp.status == 200
        seen += [e["number"] for e in page["entries"]]
        if not page["nextCursor"]:
            break
        cursor = page["nextCursor"]
    assert seen == sorted(numbers)
    resp = await api.session.get(api.url("/dnc?limit=0&cursor=%%%"), headers=KEY)
    body = await resp.json()
    assert resp.status == 400
    assert sorted(f["field"] for f in body["error"]["fields"]) == ["cursor", "limit"]


async def test_a_listing_in_progress_decides_a_racing_initiate(
    instances: Instances, twilio: Twilio
) -> None:
    """A listing whose transaction is open when an initiate arrives: the initiate waits
    for it (the number is locked) and is refused once it commits."""
    api = await instances.start()
    store = api.services.store
    assert isinstance(store, SqlCallStore)
    listing = insert(do_not_call).values(number=NUMBER, source="api", created_at=utcnow())
    # Another instance's listing, its transaction open while the initiate arrives.
    other = open_database(instances.database.url, schema=instances.database.schema)
    if isinstance(other, SqliteDatabase):
        with other.engine.begin() as conn:  # BEGIN IMMEDIATE: the file's write lock
            conn.execute(listing)
            racing = asyncio.create_task(_initiate(api, "cb-race"))
            await asyncio.sleep(0.3)
            assert not racing.done()
    else:
        assert isinstance(other, PostgresDatabase)
        async with other.engine.begin() as aconn:
            await aconn.run_sync(lambda conn: _lock_number(conn, NUMBER))
            await aconn.execute(listing)
            racing = asyncio.create_task(_initiate(api, "cb-race"))
            await asyncio.sleep(0.3)
            assert not racing.done()
    await other.dispose()
    status, body = await racing
    assert status == 403 and body["error"]["code"] == "do_not_call"
    assert twilio[0].requests == []


async def test_concurrent_listings_and_calls_agree(instances: Instances, twilio: Twilio) -> None:
    """Calls and a listing to one number at once, on two instances: every call is either
    refused without a trace or recorded and dialed; none is dialed after the listing."""
    first = await instances.start(max_calls_per_number=0)
    second = await instances.start(max_calls_per_number=0)
    calls = [_initiate(api, f"cb-{i}") for i, api in enumerate([first, second] * 3)]
    listing = _dnc(second, "PUT")
    *outcomes, (put_status, _) = await asyncio.gather(*calls, listing)
    assert put_status == 201
    accepted = {f"cb-{i}" for i, (status, _) in enumerate(outcomes) if status == 200}
    refused = {f"cb-{i}" for i, (status, _) in enumerate(outcomes) if status == 403}
    assert len(accepted) + len(refused) == 6
    for callback_id in refused:
        assert await first.services.store.get(callback_id) is None
    assert len(twilio[0].calls) == len(accepted)
    assert (await _initiate(first, "cb-after"))[0] == 403


async def test_the_cap_counts_dialed_calls_per_number(instances: Instances, twilio: Twilio) -> None:
    api = await instances.start(calling_hours="00:00-24:00")
    twilio[0].fail_next.append((503, 20503, "Service Unavailable"))
    assert (await _initiate(api, "cb-failed"))[0] == 502  # not dialed: not counted
    for i in range(3):
        assert (await _initiate(api, f"cb-{i}"))[0] == 200
    # Retries of one callbackId are one call, also once the cap is reached.
    status, body = await _initiate(api, "cb-0")
    assert status == 200 and body["duplicate"] is True
    assert (await _initiate(api, "cb-x", to="+15557654321"))[0] == 200  # another number
    resp = await api.initiate({"callbackId": "cb-3", "to": NUMBER})
    body = await resp.json()
    assert resp.status == 429 and body["error"]["code"] == "frequency_cap"
    oldest = await api.services.store.get("cb-0")
    assert oldest is not None
    # When the oldest counted call leaves the 24 h window (rounded up to the second).
    lifted = oldest.created_at + timedelta(hours=24)
    expected = lifted.replace(microsecond=0) + timedelta(seconds=1 if lifted.microsecond else 0)
    assert body["error"]["nextAllowedAt"].endswith("Z")
    assert datetime.fromisoformat(body["error"]["nextAllowedAt"]) == expected
    assert 86_000 < int(resp.headers["Retry-After"]) <= 86_400
    assert await api.services.store.get("cb-3") is None
    assert len(twilio[0].calls) == 4


async def test_racing_calls_never_pass_the_cap(instances: Instances, twilio: Twilio) -> None:
    first, second = await instances.start(), await instances.start()
    outcomes = await asyncio.gather(
        *(_initiate(api, f"cb-{i}") for i, api in enumerate([first, second] * 5))
    )
    statuses = sorted(status for status, _ in outcomes)
    assert statuses == [200] * 3 + [429] * 7
    assert len(twilio[0].calls) == 3


async def test_zero_turns_the_cap_off(instances: Instances, twilio: Twilio) -> None:
    api = await instances.start(max_calls_per_number=0)
    for i in range(5):
        assert (await _initiate(api, f"cb-{i}"))[0] == 200


async def test_refusals_are_logged_with_the_callback_id_and_counted(
    instances: Instances,
) -> None:
    api = await instances.start(max_calls_per_number=1)
    lines: list[dict[str, Any]] = []
    sink = logger.add(lambda m: lines.append(m.record), level="WARNING")
    try:
        assert (await _initiate(api, "cb-1"))[0] == 200
        assert (await _initiate(api, "cb-2"))[0] == 429
        await _dnc(api, "PUT")
        assert (await _initiate(api, "cb-3"))[0] == 403
    finally:
        logger.remove(sink)
    refused = [(r["extra"].get("callbackId"), r["extra"].get("reason")) for r in lines]
    assert ("cb-2", "frequency_cap") in refused and ("cb-3", "do_not_call") in refused
    text = await (await api.session.get(api.url("/metrics"), headers=KEY)).text()
    assert 'caller_engine_initiate_refused_total{reason="frequency_cap"} 1.0' in text
    assert 'caller_engine_initiate_refused_total{reason="do_not_call"} 1.0' in text


async def test_a_lower_cap_applies_at_once(instances: Instances) -> None:
    api = await instances.start(max_calls_per_number=3)
    for i in range(3):
        assert (await _initiate(api, f"cb-{i}"))[0] == 200
    lower = await instances.start(max_calls_per_number=2)  # the same database
    status, body = await _initiate(lower, "cb-next")
    assert status == 429 and "2 time(s)" in body["error"]["message"]


async def test_the_memory_store_admits_like_the_sql_ones() -> None:
    store = MemoryCallStore()
    admission = Admission(max_calls=1)

    def record(callback_id: str) -> CallRecord:
        return CallRecord(callback_id, NUMBER, False, AgentOverrides())

    await store.create(record("cb-1"), admission)
    with pytest.raises(CallRefused) as refused:
        await store.create(record("cb-2"), admission)
    assert refused.value.reason == "frequency_cap"
    with pytest.raises(DuplicateCall):
        await store.create(record("cb-1"), admission)
    entry, created = await store.dnc_add(DncEntry(NUMBER, "opt_out", callback_id="cb-1"))
    assert created and (await store.dnc_add(DncEntry(NUMBER, "api", reason="x")))[0] == replace(
        entry, reason="x"
    )
    with pytest.raises(CallRefused) as refused:
        await store.create(record("cb-3"), Admission())
    assert refused.value.reason == "do_not_call" and refused.value.http_status == 403
    assert [e.number for e in await store.dnc_list()] == [NUMBER]
    assert await store.dnc_remove(NUMBER) and not await store.dnc_remove(NUMBER)
    await store.create(record("cb-3"), Admission())


async def test_a_result_built_from_the_record_keeps_the_opt_out(instances: Instances) -> None:
    api = await instances.start()
    store = api.services.store
    await store.create(CallRecord("cb-lost", NUMBER, False, AgentOverrides()))
    await store.dialed("cb-lost", "CA1", "queued")
    await store.stream_started("cb-lost", "MZ1")
    await store.dnc_add(DncEntry(NUMBER, "opt_out", callback_id="cb-lost"))
    record = await store.add_status("CA1", StatusEvent("completed", 3, "now"))
    assert record is not None and record.is_final
    # The bridge's result never came (its instance died): the record's result says it.
    assert await api.services.calls.finish_from_record(record)
    kept = await store.get("cb-lost")
    assert kept is not None and kept.result is not None and kept.result.optedOut is True
