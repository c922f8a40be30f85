"""Read the TwiML an application answers with into the verbs the phone network executes. Pure.

Only what a voice bridge uses is executed: `<Connect><Stream>` (with `<Parameter>`s and an
optional `action`), `<Hangup/>`, `<Pause>`, `<Say>` and `<Play>`; any other verb is kept
as `Unsupported` so the network can report it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field


class TwimlError(ValueError):
    """The document is not TwiML Twilio could run (Twilio reports error 12100)."""


@dataclass(frozen=True, slots=True)
class ConnectStream:
    url: str
    parameters: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    action: str | None = None
    action_method: str = "POST"


@dataclass(frozen=True, slots=True)
class Hangup:
    pass


@dataclass(frozen=True, slots=True)
class Pause:
    seconds: float = 1.0


@dataclass(frozen=True, slots=True)
class Say:
    text: str


@dataclass(frozen=True, slots=True)
class Play:
    url: str


@dataclass(frozen=True, slots=True)
class Unsupported:
    tag: str


Verb = ConnectStream | Hangup | Pause | Say | Play | Unsupported


def _connect(element: ET.Element) -> Verb:
    stream = element.find("Stream")
    if stream is None:
        return Unsupported("Connect/" + "/".join(child.tag for child in element))
    url = stream.get("url", "")
    if not url:
        raise TwimlError("<Stream> without a url")
    parameters: dict[str, str] = {}
    for param in stream.findall("Parameter"):
        name, value = param.get("name"), param.get("value")
        if name is None or value is None:
            raise TwimlError("<Parameter> needs a name and a value")
        parameters[name] = value
    return ConnectStream(
        url=url,
        parameters=parameters,
        name=stream.get("name"),
        action=element.get("action"),
        action_method=(element.get("method") or "POST").upper(),
    )


def _verb(element: ET.Element) -> Verb:
    tag = element.tag
    if tag == "Connect":
        return _connect(element)
    if tag == "Hangup":
        return Hangup()
    if tag == "Pause":
        try:
            return Pause(float(element.get("length", "1")))
        except ValueError:
            raise TwimlError("<Pause length> is not a number") from None
    if tag == "Say":
        return Say((element.text or "").strip())
    if tag == "Play":
        return Play((element.text or "").strip())
    return Unsupported(tag)


def parse_twiml(text: str) -> list[Verb]:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise TwimlError(f"not XML: {exc}") from None
    if root.tag != "Response":
        raise TwimlError(f"root element is <{root.tag}>, not <Response>")
    return [_verb(child) for child in root]
