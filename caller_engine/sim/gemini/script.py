"""What the emulated Gemini model says: turns of 24 kHz PCM16 with their text and tool calls.

A `RealtimeScript` (the scenarios' μ-law script) converts to one, so every scenario runs on
this emulator too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from caller_engine.audio.codec import ulaw_to_pcm16
from caller_engine.audio.resample import StreamResampler
from caller_engine.sim.openai.realtime.script import RealtimeScript

RATE = 24000


def tone_pcm(ms: int, hz: float = 440.0, amplitude: float = 9000.0) -> bytes:
    t = np.arange(RATE * ms // 1000) / RATE
    return np.round(amplitude * np.sin(2 * math.pi * hz * t)).astype("<i2").tobytes()


def ulaw_to_24k(ulaw: bytes) -> bytes:
    resampler = StreamResampler(8000, RATE)
    samples = np.concatenate([resampler(ulaw_to_pcm16(ulaw)), resampler.flush()])
    return samples.astype("<i2").tobytes()


@dataclass
class GeminiResponse:
    text: str = ""
    pcm: bytes = b""  # 24 kHz PCM16 little-endian
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def _okay() -> GeminiResponse:
    return GeminiResponse("Okay.", tone_pcm(300))


@dataclass
class GeminiScript:
    responses: list[GeminiResponse] = field(default_factory=list)
    user_transcripts: list[str] = field(default_factory=list)
    default_response: GeminiResponse = field(default_factory=_okay)

    def next_response(self) -> GeminiResponse:
        return self.responses.pop(0) if self.responses else self.default_response

    def next_transcript(self) -> str:
        return self.user_transcripts.pop(0) if self.user_transcripts else ""

    @classmethod
    def from_realtime(cls, script: RealtimeScript) -> GeminiScript:
        def convert(r: Any) -> GeminiResponse:
            pcm = ulaw_to_24k(r.audio) if r.audio is not None else tone_pcm(r.audio_ms)
            return GeminiResponse(r.text, pcm, list(r.tool_calls))

        return cls(
            [convert(r) for r in script.responses],
            list(script.user_transcripts),
            convert(script.default_response),
        )
