"""G.711 μ-law ⇄ PCM16 as numpy lookup tables: one vectorised gather per frame.

The tables are those of `mulaw` (the reference G.711 coder), so both paths agree bit for bit.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from caller_engine.audio import mulaw

Int16Array = npt.NDArray[np.int16]

ULAW_TO_PCM16: Int16Array = np.array(mulaw.DECODE_TABLE, dtype=np.int16)
"""μ-law byte → int16 sample."""


def _pcm16_to_ulaw_table() -> npt.NDArray[np.uint8]:
    return np.frombuffer(mulaw._encode_table(), dtype=np.uint8)


PCM16_TO_ULAW: npt.NDArray[np.uint8] = _pcm16_to_ulaw_table()
"""int16 sample (viewed as uint16) → μ-law byte."""


def ulaw_to_pcm16(ulaw: bytes | bytearray | memoryview) -> Int16Array:
    """μ-law bytes → int16 samples."""
    return ULAW_TO_PCM16.take(np.frombuffer(ulaw, dtype=np.uint8))


def pcm16_to_ulaw(samples: Int16Array) -> bytes:
    """int16 samples → μ-law bytes."""
    return PCM16_TO_ULAW[samples.view(np.uint16)].tobytes()


def pcm16_from_bytes(data: bytes | bytearray | memoryview) -> Int16Array:
    """Little-endian PCM16 bytes → int16 samples (a view, no copy, on little-endian hosts)."""
    return np.frombuffer(data, dtype="<i2").astype(np.int16, copy=False)
