"""Caller audio (base64 μ-law 8 kHz) ⇄ a provider's base64 PCM16, one converter per direction.

A converting provider owns one `CallerToPcm` and one `PcmToCaller` per call. Each frame costs
a base64 decode, one table gather, one resampler step and a base64 encode; nothing is logged
or copied beyond that. μ-law providers never construct these.
"""

from __future__ import annotations

import binascii

import numpy as np

from caller_engine.audio.codec import pcm16_from_bytes, pcm16_to_ulaw, ulaw_to_pcm16
from caller_engine.audio.resample import StreamResampler

CALLER_RATE = 8000


class CallerToPcm:
    """Twilio μ-law 8 kHz → PCM16 little-endian at `rate` (8 kHz: no resampling)."""

    __slots__ = ("_resampler", "rate")

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler = StreamResampler(CALLER_RATE, rate) if rate != CALLER_RATE else None

    def convert(self, payload_b64: str) -> bytes:
        """One Twilio payload → base64 PCM16 (ASCII bytes, no newline)."""
        samples = ulaw_to_pcm16(binascii.a2b_base64(payload_b64))
        if self._resampler is not None:
            samples = self._resampler(samples)
        return binascii.b2a_base64(samples.astype("<i2", copy=False).tobytes(), newline=False)

    def reset(self) -> None:
        if self._resampler is not None:
            self._resampler.reset()


class PcmToCaller:
    """A provider's PCM16 at `rate` → μ-law 8 kHz for Twilio. Chunks may split a sample:
    an odd trailing byte waits for the next chunk."""

    __slots__ = ("_carry", "_resampler", "rate")

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler = StreamResampler(rate, CALLER_RATE) if rate != CALLER_RATE else None
        self._carry = b""

    def convert_bytes(self, pcm: bytes) -> bytes:
        """PCM16 bytes → μ-law bytes (possibly empty while the filter fills)."""
        if self._carry:
            pcm = self._carry + pcm
            self._carry = b""
        if len(pcm) & 1:
            self._carry = pcm[-1:]
            pcm = pcm[:-1]
        samples = pcm16_from_bytes(pcm)
        if self._resampler is not None:
            samples = self._resampler(samples)
        return pcm16_to_ulaw(samples)

    def convert(self, payload_b64: str | bytes) -> str:
        """Base64 PCM16 → base64 μ-law ('' while the filter fills)."""
        ulaw = self.convert_bytes(binascii.a2b_base64(payload_b64))
        return binascii.b2a_base64(ulaw, newline=False).decode("ascii") if ulaw else ""

    def flush(self) -> str:
        """End of a turn: the held tail as base64 μ-law ('' when none); the state resets."""
        self._carry = b""
        if self._resampler is None:
            return ""
        tail = self._resampler.flush()
        if not len(tail):
            return ""
        return binascii.b2a_base64(pcm16_to_ulaw(tail), newline=False).decode("ascii")

    def reset(self) -> None:
        """Barge-in: drop what the filter holds."""
        self._carry = b""
        if self._resampler is not None:
            self._resampler.reset()


def silence_pcm16(ms: int, rate: int) -> bytes:
    return np.zeros(ms * rate // 1000, dtype="<i2").tobytes()
