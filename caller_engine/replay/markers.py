"""Frame markers: a few μ-law bytes that name a stream and a frame sequence number.

A marker is 18 bytes: a 6-byte magic pattern, then 12 data nibbles (stream id: 16 bits,
sequence: 24 bits, check: 8 bits), each nibble written as one μ-law code of very low
amplitude (0xF0-0xFF and 0x70-0x7F decode to |x| <= 120). A 160-byte frame that is silent
apart from its marker has a mean amplitude below 14, far under any speech threshold, so a
marker does not change what a voice-activity detector hears. Markers are found by searching
for the magic, so they survive any re-chunking of the audio; the check byte rejects the
rare false match in real audio. Pure functions, no I/O.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import NamedTuple

MAGIC = bytes([0x70, 0xF5, 0x7A, 0xF3, 0x7C, 0xF6])
DATA_NIBBLES = 12
MARKER_BYTES = len(MAGIC) + DATA_NIBBLES
MAX_STREAM = 0xFFFF
MAX_SEQ = 0xFFFFFF
_POSITIVE = 0xF0  # μ-law codes 0xF0..0xFF: amplitude 120..0, positive


class Marker(NamedTuple):
    stream: int
    seq: int


_HEX_DIGITS = b"0123456789abcdef"
_CODES = bytes(range(_POSITIVE, 0x100))
_TO_CODE = bytes.maketrans(_HEX_DIGITS, _CODES)
_FROM_CODE = bytes.maketrans(_CODES, _HEX_DIGITS)


def _check(stream: int, seq: int) -> int:
    return zlib.crc32(stream.to_bytes(2, "big") + seq.to_bytes(3, "big")) & 0xFF


def encode(stream: int, seq: int) -> bytes:
    """The marker bytes for frame `seq` of `stream`."""
    if not 0 <= stream <= MAX_STREAM:
        raise ValueError(f"stream {stream} out of range 0..{MAX_STREAM}")
    if not 0 <= seq <= MAX_SEQ:
        raise ValueError(f"seq {seq} out of range 0..{MAX_SEQ}")
    value = (stream << 32) | (seq << 8) | _check(stream, seq)
    # 12 hex digits, one per nibble, each mapped to its low-amplitude μ-law code.
    return MAGIC + value.to_bytes(6, "big").hex().encode("ascii").translate(_TO_CODE)


def _decode_at(data: bytes | bytearray, start: int) -> Marker | None:
    """The marker whose data nibbles begin at `start`, or None if they do not check out."""
    codes = bytes(data[start : start + DATA_NIBBLES])
    if min(codes) < _POSITIVE:
        return None
    value = int(codes.translate(_FROM_CODE), 16)
    stream, seq, check = value >> 32, (value >> 8) & MAX_SEQ, value & 0xFF
    if _check(stream, seq) != check:
        return None
    return Marker(stream, seq)


def find(data: bytes | bytearray) -> Iterator[Marker]:
    """Every valid marker in `data`, in order."""
    at = data.find(MAGIC)
    end = len(data) - MARKER_BYTES
    while 0 <= at <= end:
        marker = _decode_at(data, at + len(MAGIC))
        if marker is not None:
            yield marker
            at = data.find(MAGIC, at + MARKER_BYTES)
        else:
            at = data.find(MAGIC, at + 1)


def first(data: bytes | bytearray) -> Marker | None:
    """The first valid marker in `data`, if any."""
    return next(find(data), None)


def stamp(frame: bytes | bytearray, stream: int, seq: int) -> bytes:
    """`frame` with its first bytes replaced by a marker (frames shorter than a marker are
    returned as the marker alone)."""
    marker = encode(stream, seq)
    return marker + bytes(frame[len(marker) :])


def stamp_frames(
    audio: bytes | bytearray, stream: int, first_seq: int, frame_bytes: int = 160
) -> bytes:
    """`audio` with a marker at the start of every `frame_bytes` frame, numbered from
    `first_seq`. A last frame shorter than a marker is left as it is."""
    out = bytearray(audio)
    seq = first_seq
    for at in range(0, len(out) - MARKER_BYTES + 1, frame_bytes):
        out[at : at + MARKER_BYTES] = encode(stream, seq)
        seq += 1
    return bytes(out)


def count_frames(size: int, frame_bytes: int = 160) -> int:
    """How many markers `stamp_frames` writes into `size` bytes."""
    if size < MARKER_BYTES:
        return 0
    return (size - MARKER_BYTES) // frame_bytes + 1
