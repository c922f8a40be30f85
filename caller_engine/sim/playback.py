"""Twilio's playback of a bidirectional Media Stream, as a pure clock-driven model.

Outbound media is queued and played in order at a fixed byte rate (8000 bytes/s for μ-law
8 kHz, times a speed-up factor). A mark is echoed when every byte queued before it has
played; a mark with nothing queued ahead of it is echoed at once. `clear` drops the unplayed
audio and echoes every pending mark at once. Times are whatever clock the caller passes in
(the emulator uses `loop.time()`); nothing here sleeps or does I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

MULAW_BYTES_PER_SECOND = 8000


@dataclass(frozen=True, slots=True)
class MarkEcho:
    """A mark Twilio echoed: at `time`, because its audio played, or because of a clear."""

    name: str
    time: float
    cleared: bool


@dataclass(slots=True)
class _Audio:
    data: bytes
    offset: int = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset


@dataclass(frozen=True, slots=True)
class _Mark:
    name: str


class Playback:
    """The queue of one stream's outbound audio and marks, advanced by the caller's clock."""

    def __init__(self, now: float, *, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.rate = MULAW_BYTES_PER_SECOND * speed  # bytes per second of the clock
        self.played = bytearray()
        self.cleared_bytes = 0
        self._queue: deque[_Audio | _Mark] = deque()
        self._cursor: float | None = None  # clock time the head of the queue has played up to
        self._idle_since = now

    # -- inputs --------------------------------------------------------------------------

    def add_audio(self, now: float, data: bytes) -> list[MarkEcho]:
        echoes = self.advance(now)
        if data:
            if self._cursor is None:
                self._cursor = now
            self._queue.append(_Audio(data))
        return echoes

    def add_mark(self, now: float, name: str) -> list[MarkEcho]:
        echoes = self.advance(now)
        if self._queue:
            self._queue.append(_Mark(name))
        else:
            echoes.append(MarkEcho(name, now, cleared=False))
        return echoes

    def clear(self, now: float) -> list[MarkEcho]:
        echoes = self.advance(now)
        for item in self._queue:
            if isinstance(item, _Mark):
                echoes.append(MarkEcho(item.name, now, cleared=True))
            else:
                self.cleared_bytes += item.remaining
        if self._queue:
            self._queue.clear()
            self._cursor = None
            self._idle_since = now
        return echoes

    # -- the clock -----------------------------------------------------------------------

    def advance(self, now: float) -> list[MarkEcho]:
        """Play everything due by `now`; the marks this reached, with the time each was due."""
        echoes: list[MarkEcho] = []
        cursor = self._cursor
        if cursor is None:
            return echoes
        while self._queue:
            head = self._queue[0]
            if isinstance(head, _Mark):
                echoes.append(MarkEcho(head.name, cursor, cleared=False))
                self._queue.popleft()
                continue
            end = cursor + head.remaining / self.rate
            if end <= now:
                self.played += head.data[head.offset :]
                cursor = end
                self._queue.popleft()
                continue
            count = int((now - cursor) * self.rate + 1e-6)
            if count > 0:
                self.played += head.data[head.offset : head.offset + count]
                head.offset += count
                cursor += count / self.rate
            break
        if self._queue:
            self._cursor = cursor
        else:
            self._cursor = None
            self._idle_since = cursor
        return echoes

    def next_due(self) -> float | None:
        """When the next mark is due, else when the queued audio ends; None when idle."""
        if self._cursor is None:
            return None
        due = self._cursor
        for item in self._queue:
            if isinstance(item, _Mark):
                return due
            due += item.remaining / self.rate
        return due

    # -- observations --------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        return self._cursor is None

    @property
    def queued_bytes(self) -> int:
        return sum(item.remaining for item in self._queue if isinstance(item, _Audio))

    @property
    def pending_marks(self) -> list[str]:
        return [item.name for item in self._queue if isinstance(item, _Mark)]

    def played_through(self, now: float) -> bytes:
        """Everything played by `now`, without advancing (no echo is consumed)."""
        out = bytearray(self.played)
        for item, count in self._playing(now):
            out += item.data[item.offset : item.offset + count]
        return bytes(out)

    def played_len(self, now: float) -> int:
        """len(played_through(now)), without copying."""
        return len(self.played) + sum(count for _, count in self._playing(now))

    def _playing(self, now: float) -> list[tuple[_Audio, int]]:
        """The queued audio items that have (partly) played by `now`, with the byte counts."""
        parts: list[tuple[_Audio, int]] = []
        cursor = self._cursor
        if cursor is None:
            return parts
        for item in self._queue:
            if isinstance(item, _Mark):
                continue
            end = cursor + item.remaining / self.rate
            if end > now:
                count = max(0, int((now - cursor) * self.rate + 1e-6))
                if count:
                    parts.append((item, count))
                break
            parts.append((item, item.remaining))
            cursor = end
        return parts

    def quiet_for(self, now: float) -> float:
        """Clock seconds since playback went idle at `now` (0 while audio is playing)."""
        if self._cursor is None:
            return max(0.0, now - self._idle_since)
        end = self._cursor + self.queued_bytes / self.rate
        return max(0.0, now - end)
