"""The `application/vnd.amazon.eventstream` message codec.

A message is a 12-byte prelude (total length, headers length, CRC32 of those 8 bytes),
the headers, the payload and a CRC32 of everything before it, all big-endian. A header is
a 1-byte name length, the name, a 1-byte value type and the value. Integer widths that the
wire distinguishes are kept by small `int` subclasses, so decoding and re-encoding a
message gives back the same bytes.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from zlib import crc32

PRELUDE_LENGTH = 12
MAX_HEADERS_LENGTH = 128 * 1024
MAX_PAYLOAD_LENGTH = 16 * 1024 * 1024
_PRELUDE = struct.Struct("!III")
_U32 = struct.Struct("!I")


class Int8(int):
    """A `byte` header value."""


class Int16(int):
    """A `short` header value."""


class Int64(int):
    """A `long` header value (a plain `int` is encoded as a 32-bit `integer`)."""


class Timestamp(int):
    """A `timestamp` header value: milliseconds since the Unix epoch."""


HeaderValue = bool | int | bytes | str | uuid.UUID
Headers = dict[str, HeaderValue]

_TRUE, _FALSE, _BYTE, _SHORT, _INT, _LONG, _BYTES, _STRING, _TIMESTAMP, _UUID = range(10)
_FIXED = {
    _BYTE: (struct.Struct("!b"), Int8),
    _SHORT: (struct.Struct("!h"), Int16),
    _INT: (struct.Struct("!i"), int),
    _LONG: (struct.Struct("!q"), Int64),
    _TIMESTAMP: (struct.Struct("!q"), Timestamp),
}


class EventStreamError(ValueError):
    """Bytes that are not a well-formed event-stream message."""


@dataclass(frozen=True, slots=True)
class Message:
    headers: Headers
    payload: bytes


def encode_header(name: str, value: HeaderValue) -> bytes:
    raw_name = name.encode()
    if not 0 < len(raw_name) < 256:
        raise EventStreamError(f"header name length {len(raw_name)} is not 1..255")
    head = bytes((len(raw_name),)) + raw_name
    if isinstance(value, bool):
        return head + bytes((_TRUE if value else _FALSE,))
    if isinstance(value, int):
        kind = (
            _TIMESTAMP
            if isinstance(value, Timestamp)
            else _LONG
            if isinstance(value, Int64)
            else _SHORT
            if isinstance(value, Int16)
            else _BYTE
            if isinstance(value, Int8)
            else _INT
        )
        try:
            return head + bytes((kind,)) + _FIXED[kind][0].pack(value)
        except struct.error as exc:
            raise EventStreamError(f"header {name!r}: {value} does not fit its type") from exc
    if isinstance(value, uuid.UUID):
        return head + bytes((_UUID,)) + value.bytes
    raw, kind = (value.encode(), _STRING) if isinstance(value, str) else (value, _BYTES)
    if len(raw) > 0xFFFF:
        raise EventStreamError(f"header {name!r} value is longer than 65535 bytes")
    return head + bytes((kind,)) + struct.pack("!H", len(raw)) + raw


def encode_headers(headers: Mapping[str, HeaderValue]) -> bytes:
    return b"".join(encode_header(name, value) for name, value in headers.items())


def encode_message(headers: Mapping[str, HeaderValue] | bytes, payload: bytes) -> bytes:
    """One message; `headers` may be already encoded (constant headers of a hot path)."""
    raw_headers = headers if isinstance(headers, bytes) else encode_headers(headers)
    if len(raw_headers) > MAX_HEADERS_LENGTH:
        raise EventStreamError("headers longer than 128 KiB")
    if len(payload) > MAX_PAYLOAD_LENGTH:
        raise EventStreamError("payload longer than 16 MiB")
    total = PRELUDE_LENGTH + len(raw_headers) + len(payload) + 4
    lengths = _PRELUDE.pack(total, len(raw_headers), 0)[:8]
    prelude = lengths + _U32.pack(crc32(lengths))
    body = prelude + raw_headers + payload
    return body + _U32.pack(crc32(body))


def decode_headers(data: bytes | memoryview) -> Headers:
    headers: Headers = {}
    view = memoryview(data)
    pos = 0
    end = len(view)
    try:
        while pos < end:
            name_len = view[pos]
            name = bytes(view[pos + 1 : pos + 1 + name_len]).decode()
            pos += 1 + name_len
            kind = view[pos]
            pos += 1
            value: HeaderValue
            if kind in (_TRUE, _FALSE):
                value = kind == _TRUE
            elif kind in _FIXED:
                fmt, cls = _FIXED[kind]
                value = cls(fmt.unpack_from(view, pos)[0])
                pos += fmt.size
            elif kind in (_BYTES, _STRING):
                (length,) = struct.unpack_from("!H", view, pos)
                raw = bytes(view[pos + 2 : pos + 2 + length])
                if len(raw) != length:
                    raise EventStreamError(f"header {name!r} value runs past the headers")
                value = raw.decode() if kind == _STRING else raw
                pos += 2 + length
            elif kind == _UUID:
                value = uuid.UUID(bytes=bytes(view[pos : pos + 16]))
                pos += 16
            else:
                raise EventStreamError(f"header {name!r} has unknown value type {kind}")
            if name in headers:
                raise EventStreamError(f"duplicate header {name!r}")
            headers[name] = value
    except (IndexError, struct.error, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, EventStreamError):
            raise
        raise EventStreamError(f"malformed headers: {exc}") from exc
    if pos != end:
        raise EventStreamError("headers run past their declared length")
    return headers


class Decoder:
    """Incremental decoder: feed bytes as they arrive, get whole messages back.

    Both CRCs are checked; a failure raises EventStreamError and the decoder is unusable
    afterwards (the byte stream has lost its framing)."""

    __slots__ = ("_buffer", "_failed")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._failed = False

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a whole message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message]:
        if self._failed:
            raise EventStreamError("the stream already failed to decode")
        buffer = self._buffer
        buffer += data
        messages: list[Message] = []
        start = 0
        try:
            while len(buffer) - start >= PRELUDE_LENGTH:
                total, headers_len, prelude_crc = _PRELUDE.unpack_from(buffer, start)
                if crc32(memoryview(buffer)[start : start + 8]) != prelude_crc:
                    raise EventStreamError("prelude CRC mismatch")
                if headers_len > MAX_HEADERS_LENGTH:
                    raise EventStreamError("headers longer than 128 KiB")
                payload_len = total - PRELUDE_LENGTH - headers_len - 4
                if payload_len < 0:
                    raise EventStreamError("total length shorter than its parts")
                if payload_len > MAX_PAYLOAD_LENGTH:
                    raise EventStreamError("payload longer than 16 MiB")
                if len(buffer) - start < total:
                    break
                view = memoryview(buffer)[start : start + total]
                (message_crc,) = _U32.unpack_from(view, total - 4)
                if crc32(view[: total - 4]) != message_crc:
                    raise EventStreamError("message CRC mismatch")
                headers_end = PRELUDE_LENGTH + headers_len
                headers = decode_headers(view[PRELUDE_LENGTH:headers_end])
                messages.append(Message(headers, bytes(view[headers_end : total - 4])))
                view.release()
                start += total
        except EventStreamError:
            self._failed = True
            raise
        if start:
            del buffer[:start]
        return messages
