"""Response-state tracking and interruption decisions. Pure: the session performs the effects.

The model answers one response at a time: `response.create` while one is active is an error,
and so is `response.cancel` when none is. Requests made while a response is active (or while
our own create is in flight) are queued and sent when it is done.

Barge-in comes two ways. A client-driven provider reports the caller's speech
(`speech_started`) and the bridge decides: clear the caller's playback, truncate the agent's
item to what was heard, cancel the response unless the provider does. A server-driven provider
cuts its own response and says so (`interrupted`): the bridge clears and drops the rest of
that response's audio.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from caller_engine.bridge.playback import PlaybackTracker

_IN_FLIGHT = "\x00requested"


@dataclass(frozen=True, slots=True)
class Interruption:
    clear: bool  # send Twilio `clear`
    heard: tuple[str, int] | None  # (item_id, audio_end_ms) of the agent's cut item
    truncate: bool  # tell the provider `heard` (client-driven providers)
    cancel: bool  # send `response.cancel`
    response_id: str | None


class TurnState:
    def __init__(self, server_cancels_on_barge_in: bool, *, truncates: bool = True) -> None:
        self.server_cancels = server_cancels_on_barge_in
        self.truncates = truncates
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
        if response_id is not None:
            self._dropped.add(response_id)
        heard = self._heard(playback)
        return Interruption(
            clear=audible,
            heard=heard,
            truncate=self.truncates and heard is not None,
            cancel=response_id is not None and not self.server_cancels,
            response_id=response_id,
        )

    def interrupted(self, playback: PlaybackTracker, response_id: str) -> Interruption | None:
        """The provider cut `response_id` itself: drop its later audio; clear what is still
        playing. `heard` is for the transcript: the provider is told nothing."""
        self._dropped.add(response_id)
        if self.active == response_id:
            self.active = None
        if not playback.audible:
            return None
        return Interruption(
            clear=True,
            heard=self._heard(playback),
            truncate=False,
            cancel=False,
            response_id=response_id,
        )

    @staticmethod
    def _heard(playback: PlaybackTracker) -> tuple[str, int] | None:
        item = playback.current_item
        if not playback.audible or item is None:
            return None
        return item, playback.heard_ms(item)
