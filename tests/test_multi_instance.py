"""Several instances behind a load balancer, sharing PostgreSQL (TEST_DATABASE_URL)."""

# ruff: noqa: F811  (pytest fixtures imported from tests.store_backends)

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from caller_engine.calls.models import AgentOverrides, CallRecord
from caller_engine.calls.result import CallResult
from caller_engine.sim.orchestrator import OrchestratorEmulator
from caller_engine.sim.twilio.rest import EmulatedCall, TwilioRestEmulator
from tests.conftest import API_KEY, Api
from tests.store_backends import (  # noqa: F401
    TEST_DATABASE_URL,
    Database,
    Instances,
    _postgres_schema,
    needs_postgres,
    orchestrator,
)

pytestmark = needs_postgres

Twilio = tuple[TwilioRestEmulator, str]
Orchestrator = tuple[OrchestratorEmulator, str]


@pytest.fixture
async def cluster(twilio: Twilio) -> AsyncIterator[Instances]:
    async for schema in _postgres_schema():
        group = Instances(Database("postgres", TEST_DATABASE_URL, schema), twilio[1])
        try:
            yield group
        finally:
            await group.stop_all()


async def _status(api: Api, cb: str, sid: str, value: str, seq: int, **extra: str) -> None:
    params = {"CallSid": sid, "CallStatus": value, "SequenceNumber": str(seq), **extra}
    resp = await api.twilio_post(f"/webhooks/call-status?callbackId={cb}", params)
    assert resp.status == 200


async def test_racing_initiations_on_two_instances_dial_once(
    cluster: Instances, twilio: Twilio
) -> None:
    async def slow(_call: EmulatedCall) -> None:
        await asyncio.sleep(0.2)

    twilio[0].on_call_created.append(slow)
    a, b = await cluster.start(), await cluster.start()
    body = {"callbackId": "cb-lb", "to": "+15551234567"}
    responses = await asyncio.gather(*((a, b)[i % 2].initiate(body) for i in range(10)))
    answers = [await r.json() for r in responses]
    assert [r.status for r in responses] == [200] * 10
    assert len(twilio[0].calls) == 1
    assert len({a["callSid"] for a in answers}) == 1
    assert sum(1 for a in answers if not a.get("duplicate")) == 1


async def test_callbacks_at_the_instance_without_the_stream_complete_the_record(
    cluster: Instances, orchestrator: Orchestrator
) -> None:
    receiver, url = orchestrator
    a = await cluster.start(result_webhook_url=url)
    b = await cluster.start(result_webhook_url=url)
    resp = await a.initiate({"callbackId": "cb-ab", "to": "+15551234567"})
    sid = (await resp.json())["callSid"]
    await _status(b, "cb-ab", sid, "ringing", 1)
    await _status(a, "cb-ab", sid, "in-progress", 2)
    # The media stream lands on A (the bridge writes through A's store) ...
    await a.services.store.stream_started("cb-ab", "MZ-ab")
    amd = {"CallSid": sid, "AnsweredBy": "human"}
    assert (await b.twilio_post("/webhooks/amd?callbackId=cb-ab", amd)).status == 200
    # ... the call ends, and Twilio's final callback reaches B.
    await a.services.store.stream_stopped("cb-ab")
    await _status(b, "cb-ab", sid, "completed", 3, CallDuration="48", RecordingSid="RE-ab")
    on_b = await b.services.store.get("cb-ab")
    assert on_b is not None and on_b.result is None  # B knows the stream ran on A
    result = CallResult.model_validate(
        {"callbackId": "cb-ab", "callSid": sid, "status": "completed", "fullText": "hi"}
    )
    assert await a.services.calls.finish(result)
    delivered = await receiver.wait_for("cb-ab")
    assert delivered["fullText"] == "hi"

    resp = await b.session.get(b.url("/calls/cb-ab"), headers={"X-API-Key": API_KEY})
    record: dict[str, Any] = await resp.json()
    assert [e["status"] for e in record["statusHistory"]] == ["ringing", "in-progress", "completed"]
    assert record["answeredBy"] == "human" and record["streamSid"] == "MZ-ab"
    assert record["streamStartedAt"] and record["streamStoppedAt"] and record["endedAt"]
    assert record["duration"] == 48 and record["recordingSid"] == "RE-ab"
    assert record["result"]["fullText"] == "hi" and record["resultSource"] == "bridge"
    await asyncio.sleep(0.2)  # both instances' workers keep polling
    assert len(receiver.received) == 1


async def test_a_crashed_instance_delivery_is_picked_up_by_another(
    cluster: Instances, orchestrator: Orchestrator
) -> None:
    receiver, url = orchestrator
    # An instance queues a result, leases its delivery and dies. B starts afterwards, so its
    # worker cannot claim the delivery between the queueing and the lease.
    crashed = await cluster.database.open_store()
    try:
        await crashed.create(CallRecord("cb-crash", "+15551234567", False, AgentOverrides()))
        result = CallResult(callbackId="cb-crash", callSid=None, status="no-answer")
        assert await crashed.save_result(result, source="record", default_url=url)
        [claim] = await crashed.outbox.claim("crashed-instance", lease=1.5, limit=1)
    finally:
        await crashed.close()
    assert claim.attempt == 1
    b = await cluster.start(result_webhook_url=url)
    store = b.services.store
    await asyncio.sleep(0.2)
    assert receiver.received == []  # the lease still holds
    delivered = await receiver.wait_for("cb-crash")
    assert delivered["status"] == "no-answer"
    record = await store.get("cb-crash")
    assert record is not None and record.delivery is not None
    assert record.delivery.attempts == 2


async def test_two_workers_never_send_the_same_attempt(
    cluster: Instances, orchestrator: Orchestrator
) -> None:
    receiver, url = orchestrator
    receiver.delay = 0.02
    a = await cluster.start(result_webhook_url=url)
    b = await cluster.start(result_webhook_url=url)
    keys = [f"cb-{i}" for i in range(30)]
    for i, cb in enumerate(keys):
        owner = (a, b)[i % 2]
        await owner.services.store.create(CallRecord(cb, "+15551234567", False, AgentOverrides()))
    results = [CallResult(callbackId=cb, callSid=None, status="busy") for cb in keys]
    await asyncio.gather(
        *((a, b)[i % 2].services.calls.finish(r, source="record") for i, r in enumerate(results))
    )
    for cb in keys:
        await receiver.wait_for(cb)
    await asyncio.sleep(0.1)
    assert sorted(r.key or "" for r in receiver.received) == sorted(keys)
    assert receiver.duplicates == 0
