"""The hot-path frame writer produces frames websockets itself parses back."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from caller_engine.realtime.wsframe import MaskKeys, masked_text_frame


def parse(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    gen = Frame.parse(reader.read_exact, mask=True)
    try:
        next(gen)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("frame incomplete")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 300, 65535, 65536, 70000])
def test_frames_round_trip_through_websockets_parser(size: int) -> None:
    payload = (b"abcdefghij" * (size // 10 + 1))[:size]
    keys = MaskKeys()
    frame = parse(masked_text_frame(payload, keys.next()))
    assert frame.opcode is Opcode.TEXT
    assert frame.fin
    assert frame.data == payload


def test_mask_keys_are_fresh_and_four_bytes() -> None:
    keys = MaskKeys()
    seen = {keys.next() for _ in range(3000)}  # crosses several pool refills
    assert all(len(k) == 4 for k in seen)
    assert len(seen) > 2990
