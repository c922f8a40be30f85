"""The calls this process is carrying right now, for health, drain and AMD actions."""

from __future__ import annotations

import asyncio
from typing import Protocol


class ActiveCall(Protocol):
    callback_id: str
    call_sid: str | None

    async def close(self, reason: str) -> None: ...


class ActiveCalls:
    def __init__(self) -> None:
        self._calls: set[ActiveCall] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self._calls)

    def add(self, call: ActiveCall) -> None:
        self._calls.add(call)
        self._idle.clear()

    def discard(self, call: ActiveCall) -> None:
        self._calls.discard(call)
        if not self._calls:
            self._idle.set()

    def by_call_sid(self, call_sid: str) -> ActiveCall | None:
        return next((c for c in self._calls if c.call_sid == call_sid), None)

    async def wait_idle(self, limit: float) -> bool:
        """True when every call ended within `limit` seconds."""
        try:
            await asyncio.wait_for(self._idle.wait(), limit)
        except TimeoutError:
            return False
        return True

    async def close_all(self, reason: str) -> None:
        await asyncio.gather(*(c.close(reason) for c in list(self._calls)), return_exceptions=True)
