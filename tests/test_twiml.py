"""The per-call TwiML document, checked against the twilio SDK's writer."""

from __future__ import annotations

import random

import pytest
from twilio.twiml.voice_response import VoiceResponse

from caller_engine.telephony.twiml import connect_stream

ALPHABET = "ab09-_:/.&<>\"'\r\n\t =?%é€"


def _sdk(url: str, parameters: dict[str, str]) -> str:
    response = VoiceResponse()
    stream = response.connect().stream(url=url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    return str(response.to_xml())


def test_connect_stream_writes_what_the_sdk_writes() -> None:
    rng = random.Random(7)

    def text() -> str:
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12)))

    for _ in range(300):
        url = "wss://calls.example/media-stream/" + text().replace("?", "")
        parameters = {text() or "p": text() for _ in range(rng.randint(0, 4))}
        assert connect_stream(url, parameters) == _sdk(url, parameters)


def test_a_stream_url_with_a_query_is_refused() -> None:
    with pytest.raises(ValueError, match="query string"):
        connect_stream("wss://calls.example/media-stream?callbackId=1", {})
