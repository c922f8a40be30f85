"""Idempotent initiation on every store, and the existing initiate/webhook suites re-run on
the in-memory store and on PostgreSQL (they run on the default SQLite store by themselves)."""

# ruff: noqa: F811, F403  (pytest fixtures and test suites imported on purpose)

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from caller_engine.calls.models import CallRecord, InitiateRequest
from caller_engine.calls.store import MemoryCallStore
from caller_engine.sim.twilio.rest import EmulatedCall, TwilioRestEmulator
from caller_engine.telephony.rest import TelephonyError
from tests.conftest import Api, ApiPool, make_settings
from tests.store_backends import (  # noqa: F401
    TEST_DATABASE_URL,
    Database,
    Instances,
    _postgres_schema,
    db,
    instances,
    needs_postgres,
)
from tests.test_initiate import *
from tests.test_webhooks import *

Twilio = tuple[TwilioRestEmulator, str]


@pytest.fixture(params=[pytest.param("memory"), pytest.param("postgres", marks=needs_postgres)])
async def api_factory(
    request: pytest.FixtureRequest, twilio: Twilio
) -> AsyncIterator[Callable[..., Any]]:
    """Replaces conftest's factory for the suites imported above: same apps, other stores."""
    pool = ApiPool()
    schemas = _postgres_schema() if request.param == "postgres" else None
    schema = await anext(schemas) if schemas is not None else None

    async def start(**overrides: Any) -> Api:
        settings = make_settings(**{"twilio_api_base_url": twilio[1], **overrides})
        if schema is not None:
            store: Any = await Database("postgres", TEST_DATABASE_URL, schema).open_store()
        else:
            store = MemoryCallStore()
        return await pool.open(settings, store)

    yield start
    await pool.close()
    if schemas is not None:
        with pytest.raises(StopAsyncIteration):
            await anext(schemas)


def _slow_twilio(emulator: TwilioRestEmulator, seconds: float) -> None:
    async def slow(_call: EmulatedCall) -> None:
        await asyncio.sleep(seconds)

    emulator.on_call_created.append(slow)


async def test_racing_duplicate_initiations_dial_once(instances: Instances, twilio: Twilio) -> None:
    _slow_twilio(twilio[0], 0.2)
    api = await instances.start()
    body = {"callbackId": "cb-race", "to": "+15551234567"}
    responses = await asyncio.gather(*(api.initiate(body) for _ in range(10)))
    answers = [await r.json() for r in responses]
    assert [r.status for r in responses] == [200] * 10
    assert len(twilio[0].calls) == 1
    [sid] = twilio[0].calls
    assert {a["callSid"] for a in answers} == {sid}
    assert sum(1 for a in answers if not a.get("duplicate")) == 1


async def test_duplicate_racing_a_failing_dial_answers_like_it(instances: Instances) -> None:
    api = await instances.start()
    calls = api.services.calls
    req = InitiateRequest.model_validate({"callbackId": "cb-fail", "to": "+15551234567"})
    await api.services.store.create(CallRecord("cb-fail", "+15551234567", False, req.agent))

    async def first_attempt_fails() -> None:
        await asyncio.sleep(0.1)
        error = {"code": 21612, "message": "not reachable", "httpStatus": 400}
        await api.services.store.dial_failed("cb-fail", error)

    failing = asyncio.create_task(first_attempt_fails())
    with pytest.raises(TelephonyError) as err:
        await calls.initiate(req)
    await failing
    assert err.value.code == 21612 and err.value.http_status == 400


async def test_conflicting_number_is_409_on_every_instance(
    instances: Instances, twilio: Twilio
) -> None:
    first, second = await instances.start(), await instances.start()
    assert (await first.initiate({"callbackId": "cb-x", "to": "+15551234567"})).status == 200
    other = await second.initiate({"callbackId": "cb-x", "to": "+15557654321"})
    assert other.status == 409 and (await other.json())["error"]["code"] == "conflict"
    same = await second.initiate({"callbackId": "cb-x", "to": "+15551234567"})
    assert same.status == 200 and (await same.json())["duplicate"] is True
    assert len(twilio[0].calls) == 1
