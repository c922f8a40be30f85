"""PostgreSQL stops in the middle of live calls, for real, and nothing is lost.

A throwaway cluster (initdb/pg_ctl on a free port) backs the server; two emulated calls are
talking when it stops. The outage lasts OUTAGE_SECONDS (default 3 to keep the suite short;
`OUTAGE_SECONDS=30 pytest tests/test_database_outage.py` runs the 30 s outage).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from caller_engine.calls.models import CallRecord
from caller_engine.sim.scenarios import CALLEE_NUMBER, scenarios
from caller_engine.sim.world import World, start_world
from caller_engine.web.state import SERVICES
from tests import pg_cluster

OUTAGE_SECONDS = float(os.environ.get("OUTAGE_SECONDS", "3"))
CALLS = 2
SPEED = 4.0
FAST_DELIVERY = {
    "delivery_poll_interval": 0.1,
    "delivery_backoff_base": 0.1,
    "delivery_backoff_cap": 0.5,
}

pytestmark = pytest.mark.skipif(not pg_cluster.available(), reason="initdb/pg_ctl not found")


@pytest.fixture
def cluster() -> Iterator[pg_cluster.Cluster]:
    cluster = pg_cluster.Cluster().init()
    yield cluster
    cluster.remove()


@pytest.fixture
async def world(cluster: pg_cluster.Cluster) -> AsyncIterator[World]:
    await cluster.start()
    world = await start_world(
        scenarios()["interrupt"],
        speed=SPEED,
        overrides={"database_url": cluster.url, **FAST_DELIVERY},
    )
    yield world
    await world.stop()


async def _until(
    world: World, ids: list[str], done: Callable[[CallRecord], bool], within: float
) -> list[CallRecord]:
    store = world.app[SERVICES].store
    async with asyncio.timeout(within):
        while True:
            records = [await store.get(i) for i in ids]
            if all(r is not None and done(r) for r in records):
                return [r for r in records if r is not None]
            await asyncio.sleep(0.05)


async def _get(world: World, path: str) -> tuple[int, Any]:
    async with world.http.get(world.base_url + path) as resp:
        return resp.status, await resp.json()


async def test_a_database_outage_mid_call_loses_nothing(
    cluster: pg_cluster.Cluster, world: World
) -> None:
    loop = asyncio.get_running_loop()
    ids = [f"cb-outage-{i}" for i in range(CALLS)]
    sids = [await world.place_call(i) for i in ids]
    calls = [world.phone.calls[sid] for sid in sids]
    media = [await call.wait_stream(10) for call in calls]
    await _until(world, ids, lambda r: r.stream_started_at is not None, 10)
    heard = [len(m.received_audio) for m in media]

    await cluster.stop()
    down_at = loop.time()

    # Liveness stays up, readiness says no, and no call is dialed without a record.
    status, health = await _get(world, "/health")
    assert status == 200 and health["status"] == "degraded" and health["database"] == "unavailable"
    status, ready = await _get(world, "/ready")
    assert status == 503 and ready == {"ready": False, "database": "unavailable", "draining": False}
    async with world.http.post(
        world.base_url + "/call/initiate",
        json={"callbackId": "cb-during", "to": CALLEE_NUMBER},
        headers={"X-API-Key": world.api_key},
    ) as resp:
        assert resp.status == 503 and resp.headers["Retry-After"]
        assert (await resp.json())["error"]["code"] == "database_unavailable"
    assert len(world.rest.calls) == CALLS

    # The calls go on talking and end while the database is down.
    for call in calls:
        await world.phone.wait_finished(call.sid, 30)
    assert all(len(m.received_audio) > before for m, before in zip(media, heard, strict=True))
    assert all(call.status == "completed" for call in calls)
    # Their `completed` callbacks were refused (503) and Twilio retried them.
    for call in calls:
        [completed] = [w for w in call.status_callbacks if w.params["CallStatus"] == "completed"]
        assert completed.answers and set(completed.answers) == {503}
        assert len(completed.answers) == 6  # the first try and rc=5 retries
    await asyncio.sleep(max(0.0, down_at + OUTAGE_SECONDS - loop.time()))
    assert world.orchestrator.received == []

    await cluster.start()

    # Everything is stored and delivered once.
    records = await _until(
        world,
        ids,
        lambda r: r.delivery is not None and r.delivery.state == "delivered",
        30,
    )
    for record in records:
        assert [e.status for e in record.status_history] == [
            "initiated",
            "ringing",
            "in-progress",
            "completed",
        ]
        assert record.status == "completed" and record.answered_by == "human"
        assert record.stream_started_at is not None and record.stream_stopped_at is not None
        assert record.result is not None and record.result_source == "bridge"
        assert "Of course, go ahead." in record.result.fullText
        assert record.delivery is not None and record.delivery.attempts == 1
    await asyncio.sleep(0.3)  # the delivery worker keeps polling: nothing more goes out
    assert sorted(r.key or "" for r in world.orchestrator.received) == sorted(ids)
    assert world.orchestrator.duplicates == 0
    status, health = await _get(world, "/health")
    assert status == 200 and health["status"] == "ok"
    assert (await _get(world, "/ready"))[0] == 200
    await world.place_call("cb-after")
