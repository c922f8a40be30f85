"""Server VAD by frame energy: 20 ms frames, start after a short loud run, stop after quiet.

Positions are milliseconds of all audio written to the input buffer during the session,
as in the server's `audio_start_ms` / `audio_end_ms`. `audio_start_ms` includes the
prefix padding (never reaching back before the current buffer); `audio_end_ms` includes
the silence that ended the turn.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from caller_engine.audio import mulaw

FRAME_MS = 20
MIN_SPEECH_MS = 40  # consecutive loud audio before speech counts as started
SEMANTIC_SILENCE_MS = {"low": 1200, "medium": 600, "auto": 600, "high": 300}


@dataclass(frozen=True)
class VadSettings:
    threshold: float  # mean absolute amplitude (int16 scale) a frame must exceed
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500

    @classmethod
    def from_turn_detection(
        cls, turn_detection: dict[str, Any] | None, base_threshold: float
    ) -> VadSettings | None:
        """Settings for the session's turn_detection (None when it is off).

        `threshold` (0..1, default 0.5) scales `base_threshold` proportionally. Semantic
        VAD has no silence setting; its `eagerness` picks one (low waits longest).
        """
        if not turn_detection:
            return None
        if turn_detection.get("type") == "semantic_vad":
            eagerness = turn_detection.get("eagerness") or "auto"
            return cls(base_threshold, 300, SEMANTIC_SILENCE_MS.get(eagerness, 600))
        ratio = float(turn_detection.get("threshold") or 0.5) / 0.5
        return cls(
            base_threshold * ratio,
            int(turn_detection.get("prefix_padding_ms") or 300),
            int(turn_detection.get("silence_duration_ms") or 500),
        )


@dataclass(frozen=True)
class VadEvent:
    kind: Literal["started", "stopped"]
    audio_ms: int


def pcm16_energy(frame: bytes) -> float:
    samples = array("h")
    samples.frombytes(frame[: len(frame) - len(frame) % 2])
    return sum(map(abs, samples)) / len(samples) if samples else 0.0


def energy_for(audio_format: dict[str, Any] | None) -> tuple[int, Callable[[bytes], float]]:
    """(bytes per 20 ms frame, energy function) for a session audio format."""
    kind = (audio_format or {}).get("type", "audio/pcm")
    if kind == "audio/pcm":
        return 48 * FRAME_MS, pcm16_energy
    return 8 * FRAME_MS, mulaw.frame_energy


class VoiceActivityDetector:
    def __init__(
        self,
        settings: VadSettings,
        *,
        frame_bytes: int = 160,
        energy: Callable[[bytes], float] = mulaw.frame_energy,
    ) -> None:
        self.settings = settings
        self.frame_bytes = frame_bytes
        self.energy = energy
        self.position_ms = 0  # audio framed so far (plus any manual advance)
        self.buffer_start_ms = 0  # where the uncommitted input buffer begins
        self.speaking = False
        self._pending = bytearray()
        self._loud_ms = 0
        self._loud_start_ms = 0
        self._quiet_ms = 0

    def reconfigure(
        self, settings: VadSettings, frame_bytes: int, energy: Callable[[bytes], float]
    ) -> None:
        self.settings = settings
        if frame_bytes != self.frame_bytes:
            self._pending.clear()
        self.frame_bytes = frame_bytes
        self.energy = energy

    def feed(self, data: bytes) -> list[VadEvent]:
        self._pending.extend(data)
        events: list[VadEvent] = []
        size = self.frame_bytes
        while len(self._pending) >= size:
            frame = bytes(self._pending[:size])
            del self._pending[:size]
            event = self._frame(self.energy(frame) > self.settings.threshold)
            if event is not None:
                events.append(event)
        return events

    def _frame(self, loud: bool) -> VadEvent | None:
        start = self.position_ms
        self.position_ms += FRAME_MS
        if not self.speaking:
            if not loud:
                self._loud_ms = 0
                return None
            if self._loud_ms == 0:
                self._loud_start_ms = start
            self._loud_ms += FRAME_MS
            if self._loud_ms < MIN_SPEECH_MS:
                return None
            self.speaking = True
            self._quiet_ms = 0
            padded = self._loud_start_ms - self.settings.prefix_padding_ms
            return VadEvent("started", max(self.buffer_start_ms, padded))
        if loud:
            self._quiet_ms = 0
            return None
        self._quiet_ms += FRAME_MS
        if self._quiet_ms < self.settings.silence_duration_ms:
            return None
        self.speaking = False
        self._loud_ms = 0
        return VadEvent("stopped", self.position_ms)

    def force_start(self) -> int:
        """Enter the speaking state now (a manual trigger); returns the start position."""
        self.speaking = True
        self._quiet_ms = 0
        return self.position_ms

    def advance(self, ms: int) -> None:
        """Account for audio that did not pass through `feed` (scripted user speech)."""
        self.position_ms += ms

    def mark_buffer_start(self) -> None:
        """The input buffer was committed or cleared: later speech starts from here."""
        self.buffer_start_ms = self.position_ms

    def reset(self) -> None:
        self.speaking = False
        self._loud_ms = 0
        self._quiet_ms = 0
        self._pending.clear()
        self.mark_buffer_start()
