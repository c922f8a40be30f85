"""Response-state tracking and interruption decisions. Pure: the session performs the effects.

The model answers one response at a time: `response.create` while one is active is refused,
and so is `response.cancel` when none is. The model also starts responses of its own (server
VAD), so a request of ours can cross one on the wire. The rules that make a lost or refused
request impossible:

- at most one request of ours is unconfirmed at a time; later ones wait in a queue and go out
  when no response is live and nothing is unconfirmed;
- our request is confirmed by the `response.created` that carries its tag (a response the
  model started by itself does not confirm it), or refused: a refusal because a response is
  active puts the request back at the head of the queue, to go when that response is done;
- every created response is tracked until its own `response.done`, so a late `done` of an
  older response never ends a newer one.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from caller_engine.bridge.playback import PlaybackTracker

# A refusal while no response is live means the model is behind us: ask again at once, a few
# times, before waiting for the next response to end.
MAX_BLIND_RETRIES = 3


@dataclass(frozen=True, slots=True)
class Interruption:
    clear: bool  # send Twilio `clear`
    truncate: tuple[str, int] | None  # (item_id, audio_end_ms)
    cancel: bool  # send `response.cancel`
    response_id: str | None


class TurnState:
    def __init__(self, server_cancels_on_barge_in: bool) -> None:
        self.server_cancels = server_cancels_on_barge_in
        self.active: str | None = None  # the latest created response not yet done
        self._live: dict[str, None] = {}  # created and not done, oldest first
        self._asked: tuple[str | None] | None = None  # our unconfirmed request (instructions)
        self._queue: deque[str | None] = deque()
        self._dropped: set[str] = set()
        self._blind_retries = 0

    @property
    def responding(self) -> bool:
        """A response is live, or ours is requested and not yet created."""
        return bool(self._live) or self._asked is not None

    @property
    def queued(self) -> int:
        return len(self._queue)

    def request(self, instructions: str | None = None) -> bool:
        """Ask for a response. True: send `response.create` now. False: queued."""
        if self.responding:
            self._enqueue(instructions)
            return False
        self._asked = (instructions,)
        return True

    def _enqueue(self, instructions: str | None, *, front: bool = False) -> None:
        # A plain "speak now" request is satisfied by any response: one in the queue is enough.
        if instructions is None and None in self._queue:
            return
        if front:
            self._queue.appendleft(instructions)
        else:
            self._queue.append(instructions)

    def started(self, response_id: str, requested: bool | None = None) -> None:
        """A response was created. `requested`: it carries our request's tag (True), it is the
        model's own (False), or the provider cannot tell (None: taken as ours)."""
        self._live[response_id] = None
        self.active = response_id
        if requested is not False:
            self._asked = None
            self._blind_retries = 0

    def done(self, response_id: str) -> tuple[bool, str | None]:
        """A response ended. Returns (send a queued create now?, its instructions)."""
        self._live.pop(response_id, None)
        self._dropped.discard(response_id)
        if self.active == response_id:
            self.active = next(reversed(self._live), None)
        return self._next()

    def refused(self, busy: bool) -> tuple[bool, str | None]:
        """The model refused our request: `busy` when a response was active (it goes again
        when that one is done), else for good (the next queued request goes instead)."""
        if self._asked is None:
            return False, None
        (instructions,) = self._asked
        self._asked = None
        if not busy:
            return self._next()
        self._enqueue(instructions, front=True)
        if not self._live and self._blind_retries < MAX_BLIND_RETRIES:
            self._blind_retries += 1
            return self._next()
        return False, None

    def _next(self) -> tuple[bool, str | None]:
        if self.responding or not self._queue:
            return False, None
        instructions = self._queue.popleft()
        self._asked = (instructions,)
        return True, instructions

    def accepts(self, response_id: str) -> bool:
        """False for audio of a response the caller interrupted."""
        return response_id not in self._dropped

    def can_cancel(self) -> bool:
        return self.active is not None

    def speech_started(self, playback: PlaybackTracker) -> Interruption | None:
        """The caller started talking: what to do about the agent's turn, if anything."""
        response_id = self.active
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
