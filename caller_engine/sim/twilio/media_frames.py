"""Twilio's side of the Media Streams wire format: the frames Twilio sends, and its reading of
the frames a bidirectional stream sends back. Pure functions, no I/O.

Every frame Twilio sends is a JSON text frame whose values are strings, except the numbers of
`start.mediaFormat`. `sequenceNumber` counts every frame after `connected`, from "1".
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz
FRAME_MS = 20
MULAW_SILENCE = 0xFF


def _dumps(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj).decode()


def connected() -> str:
    return _dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start(
    seq: int,
    stream_sid: str,
    *,
    account_sid: str,
    call_sid: str,
    custom_parameters: Mapping[str, str],
) -> str:
    return _dumps(
        {
            "event": "start",
            "sequenceNumber": str(seq),
            "start": {
                "accountSid": account_sid,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": dict(custom_parameters),
            },
            "streamSid": stream_sid,
        }
    )


def media(seq: int, stream_sid: str, *, chunk: int, timestamp: int, ulaw: bytes) -> str:
    return _dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "media": {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(timestamp),
                "payload": base64.b64encode(ulaw).decode(),
            },
            "streamSid": stream_sid,
        }
    )


def mark(seq: int, stream_sid: str, name: str) -> str:
    return _dumps(
        {
            "event": "mark",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "mark": {"name": name},
        }
    )


def dtmf(seq: int, stream_sid: str, digit: str) -> str:
    return _dumps(
        {
            "event": "dtmf",
            "streamSid": stream_sid,
            "sequenceNumber": str(seq),
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    )


def stop(seq: int, stream_sid: str, *, account_sid: str, call_sid: str) -> str:
    return _dumps(
        {
            "event": "stop",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "stop": {"accountSid": account_sid, "callSid": call_sid},
        }
    )


def split_frames(ulaw: bytes) -> list[bytes]:
    """20 ms frames; a short last frame is padded with μ-law silence, as a phone line is."""
    frames = [ulaw[i : i + FRAME_BYTES] for i in range(0, len(ulaw), FRAME_BYTES)]
    if frames and len(frames[-1]) < FRAME_BYTES:
        frames[-1] = frames[-1] + bytes([MULAW_SILENCE]) * (FRAME_BYTES - len(frames[-1]))
    return frames


# -- frames from the application --------------------------------------------------------


class ProtocolViolation(ValueError):
    """A frame Twilio would reject (it logs a debugger error and ignores the frame)."""


@dataclass(frozen=True, slots=True)
class OutboundMedia:
    ulaw: bytes


@dataclass(frozen=True, slots=True)
class OutboundMark:
    name: str


@dataclass(frozen=True, slots=True)
class OutboundClear:
    pass


Outbound = OutboundMedia | OutboundMark | OutboundClear


def _section(msg: dict[str, Any], key: str) -> dict[str, Any]:
    value = msg.get(key)
    if not isinstance(value, dict):
        raise ProtocolViolation(f"{msg.get('event')} without a '{key}' object")
    return value


def parse_outbound(text: str, stream_sid: str) -> Outbound:
    """Read one frame the application sent on a bidirectional stream."""
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ProtocolViolation("not JSON") from None
    if not isinstance(msg, dict):
        raise ProtocolViolation("not a JSON object")
    event = msg.get("event")
    if event not in ("media", "mark", "clear"):
        raise ProtocolViolation(f"unknown event {event!r}")
    if msg.get("streamSid") != stream_sid:
        raise ProtocolViolation(f"{event} for streamSid {msg.get('streamSid')!r}")
    if event == "clear":
        return OutboundClear()
    if event == "mark":
        name = _section(msg, "mark").get("name")
        if not isinstance(name, str):
            raise ProtocolViolation("mark without a string 'name'")
        return OutboundMark(name)
    payload = _section(msg, "media").get("payload")
    if not isinstance(payload, str):
        raise ProtocolViolation("media without a string 'payload'")
    try:
        return OutboundMedia(binascii.a2b_base64(payload, strict_mode=True))
    except binascii.Error:
        raise ProtocolViolation("media payload is not base64") from None
