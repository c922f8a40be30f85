"""The event-stream codec, cross-checked against botocore's decoder and published bytes."""

from __future__ import annotations

import base64
import uuid

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer

from caller_engine.aws.eventstream import (
    Decoder,
    EventStreamError,
    Headers,
    Int8,
    Int16,
    Int64,
    Message,
    Timestamp,
    decode_headers,
    encode_message,
)

ALL_TYPES: Headers = {
    ":true": True,
    ":false": False,
    "byte": Int8(-7),
    "short": Int16(1234),
    "int": -56789,
    "long": Int64(2**40 + 3),
    "bytes": b"\x00\x01\xff",
    "string": "héllo, world",
    ":date": Timestamp(1_700_000_000_123),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
}


def _botocore_decode(data: bytes) -> list[tuple[dict[str, object], bytes]]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return [(message.headers, message.payload) for message in buffer]


def test_botocore_decodes_every_header_type_we_encode() -> None:
    raw = encode_message(ALL_TYPES, b'{"bytes":"AAEC"}')
    ((headers, payload),) = _botocore_decode(raw)
    assert payload == b'{"bytes":"AAEC"}'
    expected = dict(ALL_TYPES)
    expected["uuid"] = ALL_TYPES["uuid"].bytes  # type: ignore[union-attr]
    assert headers == expected


def test_our_decoder_round_trips_types_exactly() -> None:
    raw = encode_message(ALL_TYPES, b"payload")
    (message,) = Decoder().feed(raw)
    assert message == Message(ALL_TYPES, b"payload")
    assert type(message.headers["byte"]) is Int8
    assert type(message.headers[":date"]) is Timestamp
    assert type(message.headers["int"]) is int
    assert encode_message(message.headers, message.payload) == raw


def test_published_signed_envelope_bytes() -> None:
    """An empty signed envelope (the close of a signed stream), byte for byte."""
    raw = base64.b64decode(
        "AAAAUwAAAEP1RHpYBTpkYXRlCAAAAWiXUkMLEDpjaHVuay1zaWduYXR1cmUGACCt6Zy+uymwEK2SrLp/zVBI"
        "5eGn83jdBwCaRUBJA+eaDafqjqI="
    )
    signature = bytes.fromhex("ade99cbebb29b010ad92acba7fcd5048e5e1a7f378dd07009a45404903e79a0d")
    headers: Headers = {":date": Timestamp(1548726977291), ":chunk-signature": signature}
    assert encode_message(headers, b"") == raw
    assert Decoder().feed(raw) == [Message(headers, b"")]
    assert _botocore_decode(raw) == [({":date": 1548726977291, ":chunk-signature": signature}, b"")]


def test_decoder_takes_bytes_in_any_split() -> None:
    stream = b"".join(
        encode_message({":event-type": "chunk", "n": index}, b"x" * index) for index in range(20)
    )
    decoder = Decoder()
    messages: list[Message] = []
    for offset in range(0, len(stream), 7):
        messages.extend(decoder.feed(stream[offset : offset + 7]))
    assert [message.headers["n"] for message in messages] == list(range(20))
    assert [len(message.payload) for message in messages] == list(range(20))
    assert decoder.pending == 0


@pytest.mark.parametrize("position", ["prelude", "headers", "payload", "crc"])
def test_corruption_anywhere_is_refused_by_both_decoders(position: str) -> None:
    raw = bytearray(encode_message({":message-type": "event"}, b"some payload"))
    index = {"prelude": 2, "headers": 14, "payload": len(raw) - 8, "crc": len(raw) - 1}[position]
    raw[index] ^= 0x01
    with pytest.raises(EventStreamError):
        Decoder().feed(bytes(raw))
    with pytest.raises(ChecksumMismatch):
        _botocore_decode(bytes(raw))


def test_a_failed_decoder_stays_failed() -> None:
    decoder = Decoder()
    with pytest.raises(EventStreamError):
        decoder.feed(b"\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00\x00" + b"\x00" * 4)
    with pytest.raises(EventStreamError):
        decoder.feed(encode_message({}, b""))


def test_lengths_that_contradict_each_other_are_refused() -> None:
    # A prelude whose CRC is right but whose headers are longer than the whole message.
    raw = bytearray(encode_message({"a": "b"}, b""))
    raw[4:8] = (1000).to_bytes(4, "big")
    from zlib import crc32

    raw[8:12] = crc32(bytes(raw[:8])).to_bytes(4, "big")
    with pytest.raises(EventStreamError):
        Decoder().feed(bytes(raw))


def test_malformed_headers() -> None:
    with pytest.raises(EventStreamError):
        decode_headers(b"\x04helo\x3c\x00\x00")  # unknown type
    with pytest.raises(EventStreamError):
        decode_headers(b"\x04helo\x06\x00\x01")  # value runs past the end
    with pytest.raises(EventStreamError):
        decode_headers(b"\x04helo\x06\x00\x00\x04helo\x07\x00\x00")  # duplicate
    assert decode_headers(b"\x04helo\x06\x00\x00\x04Helo\x07\x00\x00") == {
        "helo": b"",
        "Helo": "",
    }


def test_values_that_do_not_fit_are_refused_when_encoding() -> None:
    with pytest.raises(EventStreamError):
        encode_message({"x": Int8(300)}, b"")
    with pytest.raises(EventStreamError):
        encode_message({"x": "a" * 0x10000}, b"")
    with pytest.raises(EventStreamError):
        encode_message({"a" * 256: "x"}, b"")
