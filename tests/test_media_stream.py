"""Twilio Media Streams frames: parsing and the outbound frames we build."""

from __future__ import annotations

import base64

import orjson
import pytest

from caller_engine.telephony.media_stream import (
    MAX_PAYLOAD_CHARS,
    Connected,
    Dtmf,
    MalformedFrame,
    Mark,
    Media,
    Start,
    Stop,
    StreamWriter,
    parse_frame,
)

PAYLOAD = base64.b64encode(b"\xff" * 160).decode()


def frame(**msg: object) -> str:
    return orjson.dumps(msg).decode()


def test_every_event_parses() -> None:
    assert parse_frame(frame(event="connected", protocol="Call", version="1.0.0")) == Connected(
        "Call", "1.0.0"
    )
    start = parse_frame(
        frame(
            event="start",
            sequenceNumber="1",
            streamSid="MZ1",
            start={
                "accountSid": "AC1",
                "streamSid": "MZ1",
                "callSid": "CA1",
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {"callbackId": "cb", "token": "t"},
            },
        )
    )
    assert isinstance(start, Start)
    assert (start.stream_sid, start.call_sid, start.sample_rate) == ("MZ1", "CA1", 8000)
    assert start.custom_parameters == {"callbackId": "cb", "token": "t"}
    media = parse_frame(
        frame(
            event="media",
            sequenceNumber="4",
            streamSid="MZ1",
            media={"track": "inbound", "chunk": "2", "timestamp": "40", "payload": PAYLOAD},
        )
    )
    assert media == Media(PAYLOAD, 40, 2, "inbound")
    assert parse_frame(frame(event="mark", streamSid="MZ1", mark={"name": "7"})) == Mark("7")
    assert parse_frame(frame(event="dtmf", dtmf={"track": "inbound_track", "digit": "5"})) == Dtmf(
        "5"
    )
    assert parse_frame(frame(event="stop", stop={"accountSid": "AC1", "callSid": "CA1"})) == Stop(
        "CA1"
    )
    assert parse_frame(frame(event="something-new")) is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "bad_json"),
        ("[1]", "bad_json"),
        (frame(event="media"), "missing_field"),
        (frame(event="media", media={"payload": 5}), "missing_field"),
        (frame(event="media", media={"payload": "@@@@"}), "bad_base64"),
        (frame(event="media", media={"payload": "A" * (MAX_PAYLOAD_CHARS + 4)}), "oversize"),
        (frame(event="media", media={"payload": PAYLOAD, "timestamp": "x"}), "bad_field"),
        (frame(event="mark", mark={}), "missing_field"),
        (frame(event="start", start={"streamSid": "MZ"}), "missing_field"),
        (frame(event="dtmf", dtmf={}), "missing_field"),
    ],
)
def test_malformed_frames_name_their_reason(raw: str, reason: str) -> None:
    with pytest.raises(MalformedFrame) as err:
        parse_frame(raw)
    assert err.value.reason == reason


def test_outbound_frames_are_twilio_json() -> None:
    writer = StreamWriter('MZ"odd')
    assert orjson.loads(writer.media(PAYLOAD)) == {
        "event": "media",
        "streamSid": 'MZ"odd',
        "media": {"payload": PAYLOAD},
    }
    assert orjson.loads(writer.mark("12")) == {
        "event": "mark",
        "streamSid": 'MZ"odd',
        "mark": {"name": "12"},
    }
    assert orjson.loads(writer.clear()) == {"event": "clear", "streamSid": 'MZ"odd'}
