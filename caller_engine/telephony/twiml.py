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


def transfer_dial(
    *,
    number: str,
    caller_id: str,
    timeout: int,
    time_limit: int,
    whisper_url: str,
    action_url: str,
    hold_music_url: str | None = None,
) -> str:
    """Dial a person for a hand-off: the whisper (`<Number url>`) runs on their leg before
    the two are bridged; `action` learns how the dial ended. Optional audio plays to the
    caller first (Twilio plays ringback during the dial itself)."""
    response = VoiceResponse()
    if hold_music_url:
        response.play(hold_music_url)
    dial = response.dial(
        action=action_url,
        method="POST",
        caller_id=caller_id,
        timeout=timeout,
        time_limit=time_limit,
        answer_on_bridge=True,
    )
    dial.number(number, url=whisper_url, method="POST")
    return str(response.to_xml())


def whisper(prompt: str, screen_url: str, timeout: int) -> str:
    """What the person being transferred to hears before the bridge: press 1 to accept.
    No key (a voicemail box, a declined call) falls through to `<Hangup/>`: their leg ends
    without the caller being connected to it."""
    response = VoiceResponse()
    gather = response.gather(
        num_digits=1,
        action=screen_url,
        method="POST",
        timeout=timeout,
        action_on_empty_result=False,
    )
    gather.say(prompt)
    response.hangup()
    return str(response.to_xml())


def hangup() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response.to_xml())


def empty() -> str:
    return str(VoiceResponse().to_xml())
