"""TwiML documents, built with the twilio SDK."""

from __future__ import annotations

from twilio.twiml.voice_response import VoiceResponse


def connect_stream(stream_url: str, parameters: dict[str, str]) -> str:
    """`<Connect><Stream>` with per-call values as `<Parameter>`s (never in the URL query)."""
    if "?" in stream_url:
        raise ValueError("a Stream url must not carry a query string; use parameters")
    response = VoiceResponse()
    connect = response.connect()
    stream = connect.stream(url=stream_url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    return str(response.to_xml())


def hangup() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response.to_xml())


def empty() -> str:
    return str(VoiceResponse().to_xml())
