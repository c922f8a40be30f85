"""How many store operations run at once, and which go first.

A burst of call starts or hang-ups brings hundreds of store operations at once; run all at
once, their steps crowd the event loop's ready queue ahead of live calls' audio, and with
SQLite they only queue again for the single writer. The store takes a `PriorityGate` slot for
each operation: at most `limit` run, the others wait (costing nothing) and are let in by
priority, then in arrival order. The priority comes from the context of the task that asks:
`URGENT` for what a greeting waits on, `NORMAL` by default (webhooks, initiate, TwiML),
`BACKGROUND` for post-call work and result delivery.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar

URGENT, NORMAL, BACKGROUND = 0, 1, 2
# Store operations run at once by default (SQLite has a single writer anyway).
STORE_CONCURRENCY = 4
priority: ContextVar[int] = ContextVar("store_priority", default=NORMAL)


class PriorityGate:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.running = 0
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, f in self._waiting if not f.done())

    @asynccontextmanager
    async def slot(self, rank: int | None = None) -> AsyncIterator[None]:
        await self._acquire(priority.get() if rank is None else rank)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, rank: int) -> None:
        if self.running < self.limit and not self._waiting:
            self.running += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (rank, next(self._order), future))
        self._grant()  # a free slot behind cancelled waiters only
        try:
            await future  # whoever granted it counted us in `running`
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release()  # granted and cancelled at once: pass the slot on
            raise

    def _release(self) -> None:
        self.running -= 1
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self.running < self.limit:
            _, _, future = heapq.heappop(self._waiting)
            if future.done():  # its waiter was cancelled
                continue
            self.running += 1
            future.set_result(None)
