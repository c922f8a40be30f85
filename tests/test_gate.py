"""The store's priority gate: a limit on concurrent operations, urgent work let in first."""

from __future__ import annotations

import asyncio

import pytest

from caller_engine.calls.gate import BACKGROUND, NORMAL, URGENT, PriorityGate, priority


async def test_at_most_limit_run_and_waiters_go_by_priority_then_arrival() -> None:
    gate = PriorityGate(2)
    release = asyncio.Event()
    order: list[str] = []
    peak = 0

    async def op(name: str, rank: int) -> None:
        nonlocal peak
        async with gate.slot(rank):
            peak = max(peak, gate.running)
            order.append(name)
            await release.wait()

    tasks = [asyncio.create_task(op("first", BACKGROUND)), asyncio.create_task(op("second", 1))]
    await asyncio.sleep(0)
    for name, rank in (("bg", BACKGROUND), ("normal", NORMAL), ("urgent", URGENT), ("n2", 1)):
        tasks.append(asyncio.create_task(op(name, rank)))
    await asyncio.sleep(0)
    assert order == ["first", "second"] and gate.waiting == 4
    release.set()
    await asyncio.gather(*tasks)
    assert order == ["first", "second", "urgent", "normal", "n2", "bg"]
    assert peak == 2 and gate.running == 0


async def test_the_priority_comes_from_the_task_context() -> None:
    gate = PriorityGate(1)
    hold = asyncio.Event()
    order: list[str] = []

    async def op(name: str, rank: int | None) -> None:
        if rank is not None:
            priority.set(rank)
        async with gate.slot():
            order.append(name)
            await hold.wait()

    first = asyncio.create_task(op("holder", None))
    await asyncio.sleep(0)
    later = [
        asyncio.create_task(op("post-call", BACKGROUND)),
        asyncio.create_task(op("go", URGENT)),
    ]
    await asyncio.sleep(0)
    hold.set()
    await asyncio.gather(first, *later)
    assert order == ["holder", "go", "post-call"]


async def test_a_cancelled_waiter_never_keeps_a_slot() -> None:
    gate = PriorityGate(1)
    hold = asyncio.Event()

    async def op() -> None:
        async with gate.slot(NORMAL):
            await hold.wait()

    holder = asyncio.create_task(op())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(op())
    await asyncio.sleep(0)
    waiter.cancel()
    hold.set()
    await holder
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.running == 0
    async with asyncio.timeout(1):
        async with gate.slot(NORMAL):  # free again
            assert gate.running == 1
