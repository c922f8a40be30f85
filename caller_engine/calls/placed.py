"""The records of calls this instance has just placed, kept until Twilio fetches their TwiML.

The instance that dials a call usually also serves its TwiML: the model session it opens then
needs the call's agent settings, which it placed itself a few seconds earlier. Taking them from
here spares a database read at the call's start. A record not taken within `ttl` seconds (a
call never answered, or answered at another instance, which reads the database) is dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from caller_engine.calls.models import CallRecord

PLACED_TTL = 120.0  # seconds: longer than a call rings


class PlacedCalls:
    def __init__(self, ttl: float = PLACED_TTL, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self.clock = clock
        self._records: dict[str, tuple[float, CallRecord]] = {}  # oldest first

    def __len__(self) -> int:
        return len(self._records)

    def add(self, record: CallRecord) -> None:
        now = self.clock()
        self._expire(now)
        self._records.pop(record.callback_id, None)
        self._records[record.callback_id] = (now + self.ttl, record)

    def take(self, callback_id: str) -> CallRecord | None:
        """The call's record as placed (once), unless it expired."""
        entry = self._records.pop(callback_id, None)
        if entry is None or entry[0] <= self.clock():
            return None
        return entry[1]

    def forget(self, callback_id: str) -> None:
        """The record changed in a way its start must see (an answering machine)."""
        self._records.pop(callback_id, None)

    def _expire(self, now: float) -> None:
        while self._records:
            callback_id, (until, _) = next(iter(self._records.items()))
            if until > now:
                return
            del self._records[callback_id]
