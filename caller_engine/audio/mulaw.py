"""G.711 μ-law at 8 kHz mono: decode/encode tables, frame energy, tones and silence.

Twilio Media Streams and OpenAI's `audio/pcmu` format both carry this encoding, so one
millisecond of audio is 8 samples and 8 bytes. Pure Python, no numpy: decoding is one
table lookup per byte and encoding one lookup per sample.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from functools import cache

SAMPLE_RATE = 8000
BYTES_PER_MS = SAMPLE_RATE // 1000
SILENCE_BYTE = 0xFF  # μ-law code of amplitude 0

_BIAS = 0x84


def _decode_one(code: int) -> int:
    code = ~code & 0xFF
    sign = code & 0x80
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return -magnitude if sign else magnitude


_SEG_END = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)


def _encode_one(sample: int) -> int:
    """The reference G.711 encoder (14-bit magnitude, as in CPython's audioop)."""
    value = sample >> 2
    if value < 0:
        value = -value
        mask = 0x7F
    else:
        mask = 0xFF
    value = min(value, 8159) + (_BIAS >> 2)
    segment = next((index for index, end in enumerate(_SEG_END) if value <= end), 8)
    if segment >= 8:
        return 0x7F ^ mask
    return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask


DECODE_TABLE: tuple[int, ...] = tuple(_decode_one(code) for code in range(256))
"""μ-law byte → linear int16 sample (range ±32124)."""

_ABS_TABLE: tuple[int, ...] = tuple(abs(sample) for sample in DECODE_TABLE)
# |sample| split into high and low bytes, as translate tables: summing bytes runs in C.
_ABS_HIGH = bytes(value >> 8 for value in _ABS_TABLE)
_ABS_LOW = bytes(value & 0xFF for value in _ABS_TABLE)


@cache
def _encode_table() -> bytes:
    """int16 (as unsigned 16-bit index) → μ-law byte; built on first use."""
    return bytes(_encode_one(index - 65536 if index >= 32768 else index) for index in range(65536))


def decode(ulaw: bytes | bytearray | memoryview) -> array[int]:
    """μ-law bytes → signed 16-bit samples."""
    table = DECODE_TABLE
    return array("h", [table[code] for code in bytes(ulaw)])


def decode_to_bytes(ulaw: bytes | bytearray | memoryview) -> bytes:
    """μ-law bytes → little-endian PCM16 bytes."""
    samples = decode(ulaw)
    if array("h", [1]).tobytes() != b"\x01\x00":  # pragma: no cover - big-endian hosts
        samples.byteswap()
    return samples.tobytes()


def encode(pcm16: Iterable[int] | bytes | bytearray | memoryview) -> bytes:
    """Signed 16-bit samples (or little-endian PCM16 bytes) → μ-law bytes."""
    if isinstance(pcm16, bytes | bytearray | memoryview):
        samples = array("h")
        samples.frombytes(bytes(pcm16))
        if array("h", [1]).tobytes() != b"\x01\x00":  # pragma: no cover - big-endian hosts
            samples.byteswap()
        pcm16 = samples
    table = _encode_table()
    return bytes(table[sample & 0xFFFF] for sample in pcm16)


def frame_energy(ulaw: bytes | bytearray | memoryview) -> float:
    """Mean absolute amplitude (0..32124) of the decoded samples; 0.0 for no samples."""
    data = bytes(ulaw)
    if not data:
        return 0.0
    return (sum(data.translate(_ABS_HIGH)) * 256 + sum(data.translate(_ABS_LOW))) / len(data)


def duration_ms(ulaw: bytes | bytearray | memoryview | int) -> float:
    """Milliseconds of audio in μ-law bytes (or in a byte count)."""
    size = ulaw if isinstance(ulaw, int) else len(ulaw)
    return size / BYTES_PER_MS


def tone(ms: int, freq: float = 440.0, amplitude: int = 8000) -> bytes:
    """A deterministic sine tone of `ms` milliseconds, μ-law encoded."""
    count = max(0, ms) * BYTES_PER_MS
    step = 2.0 * math.pi * freq / SAMPLE_RATE
    return encode(round(amplitude * math.sin(step * index)) for index in range(count))


def silence(ms: int) -> bytes:
    """`ms` milliseconds of digital silence (0xFF bytes)."""
    return bytes([SILENCE_BYTE]) * (max(0, ms) * BYTES_PER_MS)
