"""Per-call latency and health figures, reported with the call result."""

from __future__ import annotations

from dataclasses import dataclass, field


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


@dataclass(slots=True)
class CallMetrics:
    greeting_ms: float | None = None
    response_ms: list[float] = field(default_factory=list)
    barge_in_ms: list[float] = field(default_factory=list)
    frames_in: int = 0
    frames_out: int = 0
    dropped_in: int = 0
    malformed: int = 0
    media_before_start: int = 0
    interruptions: int = 0
    reconnects: int = 0
    model_errors: int = 0
    _speech_stopped_at: float | None = None

    def first_audio(self, started_at: float, now: float) -> float:
        """Record the greeting latency; seconds."""
        self.greeting_ms = _ms(now - started_at)
        return now - started_at

    def speech_stopped(self, now: float) -> None:
        self._speech_stopped_at = now

    @property
    def awaiting_answer(self) -> bool:
        return self._speech_stopped_at is not None

    def response_audio(self, now: float) -> float:
        """Record the latency of an answer's first audio; seconds."""
        assert self._speech_stopped_at is not None
        seconds = now - self._speech_stopped_at
        self.response_ms.append(_ms(seconds))
        self._speech_stopped_at = None
        return seconds

    def barge_in(self, seconds: float) -> None:
        self.interruptions += 1
        self.barge_in_ms.append(_ms(seconds))

    def as_dict(self) -> dict[str, float]:
        out: dict[str, float] = {
            "framesIn": self.frames_in,
            "framesOut": self.frames_out,
            "droppedInboundFrames": self.dropped_in,
            "malformedFrames": self.malformed + self.media_before_start,
            "interruptions": self.interruptions,
            "modelReconnects": self.reconnects,
            "modelErrors": self.model_errors,
        }
        if self.greeting_ms is not None:
            out["greetingLatencyMs"] = self.greeting_ms
        if self.response_ms:
            out["responseLatencyMsAvg"] = round(sum(self.response_ms) / len(self.response_ms), 3)
            out["responseLatencyMsMax"] = max(self.response_ms)
        if self.barge_in_ms:
            out["bargeInLatencyMsMax"] = max(self.barge_in_ms)
        return out
