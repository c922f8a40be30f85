"""Status and AMD callbacks that race our own write of the CallSid are never lost.

Twilio often calls back `initiated` while the create request is still returning; the
emulated Twilio here sends it concurrently with the create response, or before it.
"""

# ruff: noqa: F811  (pytest fixtures imported from tests.store_backends)

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from caller_engine.sim.twilio import webhooks as hooks
from caller_engine.sim.twilio.rest import EmulatedCall, TwilioRestEmulator
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, PUBLIC_BASE, Api
from tests.store_backends import Instances, db, instances  # noqa: F401

Twilio = tuple[TwilioRestEmulator, str]
# Initiations per run: the racing order (concurrent) is the one that lost callbacks; the
# callback before the create answer is the deterministic other order.
CALLS = {"concurrent": 150, "before": 50}
CONCURRENCY = 25


def _callbacks(
    api: Api, session: aiohttp.ClientSession, sent: list[hooks.WebhookRecord]
) -> Callable[[EmulatedCall], Awaitable[None]]:
    route = hooks.rebase(PUBLIC_BASE, api.root)

    async def send(call: EmulatedCall) -> None:
        status = hooks.status_params(call, ACCOUNT_SID, "initiated", 0)
        amd = hooks.amd_params(call, ACCOUNT_SID, "human", 1200)
        for kind, url, params in (
            ("status", call.get("StatusCallback"), status),
            ("amd", call.get("AsyncAmdStatusCallback"), amd),
        ):
            record = hooks.WebhookRecord(kind, "POST", url, params, sent_at=0.0)
            sent.append(await hooks.deliver(session, record, auth_token=AUTH_TOKEN, route=route))

    return send


@pytest.mark.parametrize("timing", ["concurrent", "before"])
async def test_callbacks_racing_the_create_response_are_all_kept(
    instances: Instances, twilio: Twilio, timing: str
) -> None:
    api = await instances.start()
    sent: list[hooks.WebhookRecord] = []
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession() as session:
        send = _callbacks(api, session, sent)

        async def on_created(call: EmulatedCall) -> None:
            if timing == "before":
                await send(call)
                return
            task = asyncio.get_running_loop().create_task(send(call))
            tasks.add(task)

        twilio[0].on_call_created.append(on_created)
        gate = asyncio.Semaphore(CONCURRENCY)

        async def initiate(n: int) -> int:
            async with gate:
                resp = await api.initiate({"callbackId": f"cb-{n}", "to": f"+1555123{n:04d}"})
                return resp.status

        statuses = await asyncio.gather(*(initiate(n) for n in range(CALLS[timing])))
        await asyncio.gather(*tasks)

    assert statuses == [200] * CALLS[timing]
    assert [r.status for r in sent] == [200] * (2 * CALLS[timing])
    for n in range(CALLS[timing]):
        record = await api.services.store.get(f"cb-{n}")
        assert record is not None and record.call_sid is not None
        assert [e.status for e in record.status_history] == ["initiated"], record.callback_id
        assert record.answered_by == "human", record.callback_id
