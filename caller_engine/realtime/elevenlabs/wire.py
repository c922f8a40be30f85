"""The conversation WebSocket's messages: built for sending, parsed into small typed records.

Vendor shapes stay here. The wrapper key of each server message is not uniform (`audio` →
`audio_event`, `user_transcript` → `user_transcription_event`, `client_tool_call` →
`client_tool_call`); `parse` knows each. Caller audio goes up as `{"user_audio_chunk": "<b64>"}`
(no `type`), built from bytes without a JSON encoder so a μ-law payload passes through as the
string Twilio sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

AUDIO_PREFIX = b'{"user_audio_chunk":"'
AUDIO_SUFFIX = b'"}'
ULAW_8000 = "ulaw_8000"
PCM_RATES = frozenset({8000, 16000, 22050, 24000, 44100, 48000})


@dataclass(frozen=True, slots=True)
class AudioFormat:
    encoding: str  # "ulaw" | "pcm" (16-bit little-endian mono)
    rate: int

    @property
    def is_ulaw_8000(self) -> bool:
        return self.encoding == "ulaw" and self.rate == 8000


def audio_format(name: str) -> AudioFormat | None:
    """`ulaw_8000` or `pcm_<rate>` (a rate the service offers); None for anything else."""
    encoding, _, rate = name.partition("_")
    if not rate.isdigit():
        return None
    hz = int(rate)
    if encoding == "ulaw" and hz == 8000:
        return AudioFormat("ulaw", 8000)
    if encoding == "pcm" and hz in PCM_RATES:
        return AudioFormat("pcm", hz)
    return None


# -- client → server --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Overrides:
    """Per-call settings carried by `conversation_initiation_client_data`. Each one works only
    where the agent allows overriding that field."""

    prompt: str | None = None
    first_message: str | None = None
    voice_id: str | None = None
    language: str | None = None
    dynamic_variables: dict[str, str | int | float | bool] = field(default_factory=dict)
    user_id: str | None = None

    @property
    def override_paths(self) -> list[str]:
        """The agent settings (under `platform_settings.overrides.conversation_config_override`)
        these overrides need."""
        paths = []
        if self.prompt is not None:
            paths.append("agent.prompt.prompt")
        if self.first_message is not None:
            paths.append("agent.first_message")
        if self.language is not None:
            paths.append("agent.language")
        if self.voice_id is not None:
            paths.append("tts.voice_id")
        return paths


def dynamic_variables(metadata: dict[str, Any]) -> dict[str, str | int | float | bool]:
    """Call metadata as dynamic variables: scalars as they are, anything else as compact JSON
    (the service takes only strings, numbers and booleans). `system__` names are reserved."""
    out: dict[str, str | int | float | bool] = {}
    for key, value in metadata.items():
        if key.startswith("system__") or value is None:
            continue
        if isinstance(value, str | int | float | bool):
            out[key] = value
        else:
            out[key] = orjson.dumps(value).decode()
    return out


def initiation(overrides: Overrides) -> dict[str, Any]:
    """The first message of every conversation, even with nothing to override."""
    msg: dict[str, Any] = {"type": "conversation_initiation_client_data"}
    agent: dict[str, Any] = {}
    if overrides.prompt is not None:
        agent["prompt"] = {"prompt": overrides.prompt}
    if overrides.first_message is not None:
        agent["first_message"] = overrides.first_message
    if overrides.language is not None:
        agent["language"] = overrides.language
    config: dict[str, Any] = {}
    if agent:
        config["agent"] = agent
    if overrides.voice_id is not None:
        config["tts"] = {"voice_id": overrides.voice_id}
    if config:
        msg["conversation_config_override"] = config
    if overrides.dynamic_variables:
        msg["dynamic_variables"] = dict(overrides.dynamic_variables)
    if overrides.user_id:
        msg["user_id"] = overrides.user_id
    return msg


def audio_chunk(payload_b64: str) -> bytes:
    return AUDIO_PREFIX + payload_b64.encode("ascii") + AUDIO_SUFFIX


def pong(event_id: int) -> dict[str, Any]:
    return {"type": "pong", "event_id": event_id}


def tool_result(tool_call_id: str, result: str, *, is_error: bool) -> dict[str, Any]:
    return {
        "type": "client_tool_result",
        "tool_call_id": tool_call_id,
        "result": result,
        "is_error": is_error,
    }


def contextual_update(text: str) -> dict[str, Any]:
    return {"type": "contextual_update", "text": text}


def user_message(text: str) -> dict[str, Any]:
    return {"type": "user_message", "text": text}


# -- server → client --------------------------------------------------------------------


@dataclass(slots=True)  # not frozen: built for every audio chunk
class Audio:
    payload: str  # base64, in the agent's output format
    event_id: int


@dataclass(frozen=True, slots=True)
class Metadata:
    conversation_id: str
    output_format: str
    input_format: str


@dataclass(frozen=True, slots=True)
class Ping:
    event_id: int


@dataclass(frozen=True, slots=True)
class Interruption:
    event_id: int


@dataclass(frozen=True, slots=True)
class AgentResponse:
    text: str
    event_id: int


@dataclass(frozen=True, slots=True)
class Correction:
    original: str
    corrected: str
    event_id: int


@dataclass(frozen=True, slots=True)
class UserTranscript:
    text: str
    event_id: int


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    call_id: str
    parameters: dict[str, Any]
    event_id: int


@dataclass(frozen=True, slots=True)
class AgentToolResponse:
    name: str
    tool_type: str
    is_error: bool
    event_id: int


@dataclass(frozen=True, slots=True)
class ServerError:
    """An `error` frame, sent before the service closes on an error. Seen both wrapped
    (`error_event{code, message, error_type}`) and flat (`{"type":"error","message":…}`)."""

    code: int | None
    message: str
    error_type: str | None

    @property
    def quota(self) -> bool:
        return "quota" in self.message.lower()


ServerMessage = (
    Audio
    | Metadata
    | Ping
    | Interruption
    | AgentResponse
    | Correction
    | UserTranscript
    | ToolCall
    | AgentToolResponse
    | ServerError
)


def _error(msg: dict[str, Any]) -> ServerError:
    body = msg.get("error_event")
    if not isinstance(body, dict):
        body = msg
    code = body.get("code")
    message = body.get("message") or body.get("reason") or body.get("debug_message") or ""
    error_type = body.get("error_type")
    return ServerError(
        code if isinstance(code, int) else None,
        str(message),
        str(error_type) if error_type else None,
    )


def parse(raw: str | bytes) -> ServerMessage | None:
    """One server frame; None for events this client does not use. Raises ValueError
    (orjson's decode error), KeyError or TypeError on a malformed frame."""
    msg = orjson.loads(raw)
    kind = msg["type"]
    if kind == "audio":
        event = msg["audio_event"]
        return Audio(event["audio_base_64"], int(event["event_id"]))
    if kind == "ping":
        return Ping(int(msg["ping_event"]["event_id"]))
    if kind == "agent_response":
        event = msg["agent_response_event"]
        return AgentResponse(str(event["agent_response"]), int(event["event_id"]))
    if kind == "user_transcript":
        event = msg["user_transcription_event"]
        return UserTranscript(str(event["user_transcript"]), int(event["event_id"]))
    if kind == "interruption":
        return Interruption(int(msg["interruption_event"]["event_id"]))
    if kind == "agent_response_correction":
        event = msg["agent_response_correction_event"]
        return Correction(
            str(event["original_agent_response"]),
            str(event["corrected_agent_response"]),
            int(event["event_id"]),
        )
    if kind == "client_tool_call":
        event = msg["client_tool_call"]
        params = event.get("parameters") or {}
        if not isinstance(params, dict):
            raise TypeError("client_tool_call.parameters is not an object")
        return ToolCall(
            str(event["tool_name"]), str(event["tool_call_id"]), params, int(event["event_id"])
        )
    if kind == "agent_tool_response":
        event = msg["agent_tool_response"]
        return AgentToolResponse(
            str(event["tool_name"]),
            str(event.get("tool_type", "")),
            bool(event.get("is_error", False)),
            int(event.get("event_id", 0)),
        )
    if kind == "conversation_initiation_metadata":
        event = msg["conversation_initiation_metadata_event"]
        return Metadata(
            str(event["conversation_id"]),
            str(event["agent_output_audio_format"]),
            str(event.get("user_input_audio_format") or "pcm_16000"),
        )
    if kind == "error":
        return _error(msg)
    return None
