"""TwiML documents: the per-call `<Connect><Stream>` written directly (it is served for every
call), the rarer ones built with the twilio SDK."""

from __future__ import annotations

from twilio.twiml.voice_response import VoiceResponse

_XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>'
# What an attribute value needs escaped, as ElementTree (and so the SDK) writes it.
_ATTRIBUTE = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "\r": "&#13;",
        "\n": "&#10;",
        "\t": "&#09;",
    }
)


def connect_stream(stream_url: str, parameters: dict[str, str]) -> str:
    """`<Connect><Stream>` with per-call values as `<Parameter>`s (never in the URL query).
    The same document the SDK's VoiceResponse writes, in a fraction of its time."""
    if "?" in stream_url:
        raise ValueError("a Stream url must not carry a query string; use parameters")
    params = "".join(
        f'<Parameter name="{name.translate(_ATTRIBUTE)}" value="{value.translate(_ATTRIBUTE)}" />'
        for name, value in parameters.items()
    )
    url = stream_url.translate(_ATTRIBUTE)
    stream = f'<Stream url="{url}">{params}</Stream>' if params else f'<Stream url="{url}" />'
    return f"{_XML_HEAD}<Response><Connect>{stream}</Connect></Response>"


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
