"""Event-loop lag of the replay process itself: how late a short sleep wakes up.

When the load generator's own loop runs late, every latency it measures grows with it; the
report shows this figure next to the results so a saturated driver is not mistaken for a
slow server.
"""

from __future__ import annotations

import asyncio
import contextlib

from caller_engine.replay.stats import summarize


class LoopLag:
    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.lags_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            self.lags_ms.append(max(0.0, (loop.time() - due) * 1000.0))

    def summary(self) -> dict[str, object]:
        return summarize(self.lags_ms)
