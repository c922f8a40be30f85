"""Audio in the agent's formats, for the emulator: μ-law 8 kHz or 16-bit PCM at a rate."""

from __future__ import annotations

from array import array
from collections.abc import Callable

from caller_engine.audio import mulaw
from caller_engine.realtime.elevenlabs.wire import AudioFormat
from caller_engine.sim.openai.realtime.vad import FRAME_MS, pcm16_energy


def bytes_per_ms(fmt: AudioFormat) -> float:
    return fmt.rate / 1000 * (1 if fmt.encoding == "ulaw" else 2)


def from_ulaw(ulaw: bytes, fmt: AudioFormat) -> bytes:
    """Scripted μ-law audio in an output format (nearest-sample resampling is enough here)."""
    if fmt.is_ulaw_8000:
        return ulaw
    samples = mulaw.decode(ulaw)
    count = len(samples) * fmt.rate // 8000
    out = array("h", (samples[i * 8000 // fmt.rate] for i in range(count)))
    return out.tobytes()


def energy(fmt: AudioFormat) -> tuple[int, Callable[[bytes], float]]:
    """(bytes per 20 ms frame, energy function) of an input format."""
    if fmt.encoding == "ulaw":
        return 8 * FRAME_MS, mulaw.frame_energy
    return int(fmt.rate / 1000 * 2 * FRAME_MS), pcm16_energy
