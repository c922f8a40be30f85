"""Writes the database could not take, kept in order and retried until stored.

While the database is down, calls go on: stream starts and stops, post-call results and
Twilio callbacks that we answered with 503 wait here and are written (and results handed
on for delivery) once it is back. Memory is bounded by `limit` writes; past it a write is
dropped with an error log (a Twilio callback is then left to Twilio's own retries).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from loguru import logger

from caller_engine.calls.availability import StoreUnavailable
from caller_engine.logging import call_logger

Write = Callable[[], Awaitable[object]]
T = TypeVar("T")

DEFAULT_LIMIT = 5_000
FIRST_DELAY = 0.25
MAX_DELAY = 5.0


@dataclass(slots=True)
class _Pending:
    what: str
    callback_id: str | None
    write: Write
    attempts: int = 1


class PendingWrites:
    def __init__(
        self,
        *,
        limit: int = DEFAULT_LIMIT,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
    ) -> None:
        self.limit = limit
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._queue: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._queue)

    async def attempt(self, what: str, callback_id: str | None, write: Write) -> bool:
        """Write now; when the database is unavailable, queue it. True when stored now."""
        stored = await self.attempt_returning(what, callback_id, _done(write))
        return stored is not None

    async def attempt_returning(
        self, what: str, callback_id: str | None, write: Callable[[], Awaitable[T]]
    ) -> T | None:
        """Like `attempt`, with what the write returned; None when it was queued."""
        if self._queue:  # keep the order: behind what already waits
            self.defer(what, callback_id, write)
            return None
        try:
            return await write()
        except StoreUnavailable as exc:
            call_logger(callback_id).warning("database unavailable ({}): {} queued", exc, what)
            self.defer(what, callback_id, write)
            return None

    def defer(self, what: str, callback_id: str | None, write: Write) -> bool:
        """Queue a write that failed for want of the database; False when full (dropped)."""
        if len(self._queue) >= self.limit:
            self.dropped += 1
            call_logger(callback_id).error(
                "database unavailable and {} writes waiting: {} dropped", len(self._queue), what
            )
            return False
        self._queue.append(_Pending(what, callback_id, write))
        self._wake.set()
        self.start()
        return True

    def start(self) -> None:
        if self._task is None or self._task.done():
            with contextlib.suppress(RuntimeError):  # no running loop: started on first use
                self._task = asyncio.get_running_loop().create_task(
                    self._run(), name="pending-writes"
                )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._queue:
            logger.error("{} database writes still waiting at shutdown are lost", len(self._queue))

    async def _run(self) -> None:
        delay = self.first_delay
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            item = self._queue[0]
            try:
                await item.write()
            except StoreUnavailable:
                item.attempts += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_delay)
                continue
            except Exception:
                call_logger(item.callback_id).exception("{} failed; not retried", item.what)
            else:
                call_logger(item.callback_id).info(
                    "{} stored after {} attempt(s); {} waiting",
                    item.what,
                    item.attempts,
                    len(self._queue) - 1,
                )
            self._queue.popleft()
            delay = self.first_delay


def _done(write: Write) -> Callable[[], Awaitable[bool]]:
    async def wrapped() -> bool:
        await write()
        return True

    return wrapped
