"""Response-state tracking and interruption decisions. Pure: the session performs the effects.

The model answers one response at a time: `response.create` while one is active is an error,
and so is `response.cancel` when none is. Requests made while a response is active (or while
our own create is in flight) are queued and sent when it is done.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from caller_engine.bridge.playback import PlaybackTracker

_IN_FLIGHT = "\x00requested"


@dataclass(frozen=True, slots=True)
class Interruption:
    clear: bool  # send Twilio `clear`
    truncate: tuple[str, int] | None  # (item_id, audio_end_ms)
    cancel: bool  # send `response.cancel`
    response_id: str | None


class TurnState:
    def __init__(self, server_cancels_on_barge_in: bool) -> None:
        self.server_cancels = server_cancels_on_barge_in
        self.active: str | None = None
        self._queue: deque[str | None] = deque()
        self._dropped: set[str] = set()

    @property
    def responding(self) -> bool:
        """A response is active or requested and not yet created."""
        return self.active is not None

    @property
    def queued(self) -> int:
        return len(self._queue)

    def request(self, instructions: str | None = None) -> bool:
        """Ask for a response. True: send `response.create` now. False: queued."""
        if self.active is not None:
            if instructions is not None or None not in self._queue:
                self._queue.append(instructions)
            return False
        self.active = _IN_FLIGHT
        return True

    def started(self, response_id: str) -> None:
        self.active = response_id

    def done(self, response_id: str) -> tuple[bool, str | None]:
        """A response ended. Returns (send a queued create now?, its instructions)."""
        if self.active in (response_id, _IN_FLIGHT):
            self.active = None
        self._dropped.discard(response_id)
        if self.active is None and self._queue:
            self.active = _IN_FLIGHT
            return True, self._queue.popleft()
        return False, None

    def request_failed(self) -> tuple[bool, str | None]:
        """Our create was refused (e.g. a server-created response won the race)."""
        if self.active == _IN_FLIGHT:
            self.active = None
        return False, None

    def accepts(self, response_id: str) -> bool:
        """False for audio of a response the caller interrupted."""
        return response_id not in self._dropped

    def can_cancel(self) -> bool:
        return self.active is not None and self.active != _IN_FLIGHT

    def speech_started(self, playback: PlaybackTracker) -> Interruption | None:
        """The caller started talking: what to do about the agent's turn, if anything."""
        response_id = self.active if self.can_cancel() else None
        audible = playback.audible
        if response_id is None and not audible:
            return None
        truncate = None
        item = playback.current_item
        if audible and item is not None:
            truncate = (item, playback.heard_ms(item))
        if response_id is not None:
            self._dropped.add(response_id)
        return Interruption(
            clear=audible,
            truncate=truncate,
            cancel=response_id is not None and not self.server_cancels,
            response_id=response_id,
        )
