"""Model connections opened when Twilio fetches the TwiML, handed to the stream by CallSid.

Opening the model socket and sending `session.update` while Twilio is still connecting the
media stream takes seconds off the greeting. A warm connection nobody claims within the
timeout is closed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from loguru import logger

from caller_engine.calls.models import CallRecord
from caller_engine.realtime.base import RealtimeConnector, RealtimeSession, SessionConfig


@dataclass(frozen=True, slots=True)
class Warm:
    """A model session being opened for a call, and the call's record as read then
    (`read`: False when the store could not answer, so the stream's start asks again)."""

    session: asyncio.Task[RealtimeSession]
    record: CallRecord | None
    provider: str
    read: bool = True


class Prewarmer:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._warm: dict[str, tuple[Warm, asyncio.TimerHandle]] = {}
        self._discarding: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._warm)

    def start(
        self,
        call_sid: str,
        provider: str,
        connector: RealtimeConnector,
        config: SessionConfig,
        record: CallRecord | None,
        *,
        read: bool = True,
    ) -> None:
        if call_sid in self._warm:
            return
        task = asyncio.create_task(connector.connect(config), name=f"prewarm-{call_sid}")
        timer = asyncio.get_running_loop().call_later(self.timeout, self._expire, call_sid)
        self._warm[call_sid] = (Warm(task, record, provider, read), timer)

    def take(self, call_sid: str) -> Warm | None:
        entry = self._warm.pop(call_sid, None)
        if entry is None:
            return None
        entry[1].cancel()
        return entry[0]

    def _expire(self, call_sid: str) -> None:
        entry = self._warm.pop(call_sid, None)
        if entry is not None:
            logger.bind(callSid=call_sid).info("no stream arrived; closing the warm model session")
            task = asyncio.create_task(discard(entry[0].session))
            self._discarding.add(task)
            task.add_done_callback(self._discarding.discard)

    async def close_all(self) -> None:
        entries = list(self._warm.values())
        self._warm.clear()
        for warm, timer in entries:
            timer.cancel()
            await discard(warm.session)


async def discard(task: asyncio.Task[RealtimeSession]) -> None:
    """Close whatever the task opened, or stop it opening."""
    if not task.done():
        task.cancel()
        await asyncio.wait({task})
    if task.cancelled() or task.exception() is not None:
        return
    await task.result().close()
