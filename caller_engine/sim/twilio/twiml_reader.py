"""Read the TwiML an application answers with into the verbs the phone network executes. Pure.

Only what a voice bridge uses is executed: `<Connect><Stream>` (with `<Parameter>`s and an
optional `action`), `<Dial>` of `<Number>`s (with a whisper `url`), `<Gather>` of digits,
`<Hangup/>`, `<Pause>`, `<Say>` and `<Play>`; any other verb is kept as `Unsupported` so the
network can report it.
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


@dataclass(frozen=True, slots=True)
class DialNumber:
    number: str
    url: str | None = None  # TwiML run on the answered leg before the bridge (a whisper)
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class Dial:
    numbers: tuple[DialNumber, ...]
    action: str | None = None
    method: str = "POST"
    timeout: int = 30
    time_limit: int = 14_400
    caller_id: str | None = None
    answer_on_bridge: bool = False


@dataclass(frozen=True, slots=True)
class Gather:
    prompts: tuple[Say | Play | Pause, ...] = ()
    num_digits: int | None = None
    action: str | None = None
    method: str = "POST"
    timeout: int = 5
    finish_on_key: str = "#"


Verb = ConnectStream | Hangup | Pause | Say | Play | Dial | Gather | Unsupported


def _int(element: ET.Element, name: str, default: int, low: int, high: int) -> int:
    raw = element.get(name)
    if raw is None:
        return default
    if not raw.strip().isdigit() or not low <= int(raw) <= high:
        raise TwimlError(f'<{element.tag} {name}="{raw}"> is not an integer in {low}..{high}')
    return int(raw)


def _method(element: ET.Element) -> str:
    method = (element.get("method") or "POST").upper()
    if method not in ("GET", "POST"):
        raise TwimlError(f'<{element.tag} method="{method}"> is not GET or POST')
    return method


def _dial(element: ET.Element) -> Verb:
    numbers: list[DialNumber] = []
    text = (element.text or "").strip()
    if text:
        numbers.append(DialNumber(text))
    for child in element:
        if child.tag != "Number":
            return Unsupported("Dial/" + child.tag)
        number = (child.text or "").strip()
        if not number:
            raise TwimlError("<Number> without a number")
        numbers.append(DialNumber(number, child.get("url") or None, _method(child)))
    if not numbers:
        raise TwimlError("<Dial> with nothing to dial")
    return Dial(
        numbers=tuple(numbers),
        action=element.get("action") or None,
        method=_method(element),
        timeout=_int(element, "timeout", 30, 1, 600),
        time_limit=_int(element, "timeLimit", 14_400, 1, 86_400),
        caller_id=element.get("callerId") or None,
        answer_on_bridge=(element.get("answerOnBridge") or "").lower() == "true",
    )


def _gather(element: ET.Element) -> Verb:
    prompts: list[Say | Play | Pause] = []
    for child in element:
        verb = _verb(child)
        if not isinstance(verb, Say | Play | Pause):
            raise TwimlError(f"<{child.tag}> cannot be nested in <Gather>")
        prompts.append(verb)
    digits = element.get("numDigits")
    return Gather(
        prompts=tuple(prompts),
        num_digits=_int(element, "numDigits", 0, 1, 64) if digits is not None else None,
        action=element.get("action") or None,
        method=_method(element),
        timeout=_int(element, "timeout", 5, 0, 600),
        finish_on_key=element.get("finishOnKey", "#"),
    )


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
    if tag == "Dial":
        return _dial(element)
    if tag == "Gather":
        return _gather(element)
    return Unsupported(tag)


def parse_twiml(text: str) -> list[Verb]:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise TwimlError(f"not XML: {exc}") from None
    if root.tag != "Response":
        raise TwimlError(f"root element is <{root.tag}>, not <Response>")
    return [_verb(child) for child in root]
