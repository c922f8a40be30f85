"""Client-to-server WebSocket text frames for the audio hot path (RFC 6455 §5.2).

Caller audio goes to the model 50 times a second per call. Going through the `websockets`
connection's `send()` costs an async context manager, a frame object, a BytesIO and one
`os.urandom` call per frame; this writes the same bytes directly: header, a masking key taken
from a pooled strong-entropy buffer, and the payload masked by websockets' C routine.
It is only used on an open connection, for complete (unfragmented) text messages, which
`websockets` itself never interleaves with: its own writes are whole frames too.
"""

from __future__ import annotations

import os
import struct

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - pure-Python build of websockets
    from websockets.utils import apply_mask

_POOL_BYTES = 4096
_FIN_TEXT = 0x81
_MASKED = 0x80


class MaskKeys:
    """4-byte masking keys from os.urandom, fetched 4 KiB at a time."""

    __slots__ = ("_offset", "_pool")

    def __init__(self) -> None:
        self._pool = b""
        self._offset = _POOL_BYTES

    def next(self) -> bytes:
        if self._offset >= len(self._pool):
            self._pool = os.urandom(_POOL_BYTES)
            self._offset = 0
        key = self._pool[self._offset : self._offset + 4]
        self._offset += 4
        return key


def masked_text_frame(payload: bytes, key: bytes) -> bytes:
    """A final, masked text frame carrying `payload` (UTF-8)."""
    n = len(payload)
    if n < 126:
        head = bytes((_FIN_TEXT, _MASKED | n))
    elif n < 65536:
        head = struct.pack("!BBH", _FIN_TEXT, _MASKED | 126, n)
    else:
        head = struct.pack("!BBQ", _FIN_TEXT, _MASKED | 127, n)
    return head + key + apply_mask(payload, key)
