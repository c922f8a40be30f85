"""The provider-neutral face of a realtime speech model.

The bridge speaks only these events and this interface; each provider module translates its
own wire protocol. Audio crosses as base64 μ-law strings so that μ-law providers pass Twilio's
payloads through without decoding.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


@dataclass(frozen=True, slots=True)
class SessionConfig:
    instructions: str
    voice: str
    tools: list[dict[str, Any]] = field(default_factory=list)
    vad_type: Literal["server_vad", "semantic_vad"] = "server_vad"
    vad_threshold: float = 0.5
    vad_silence_ms: int = 500
    vad_prefix_ms: int = 300
    interrupt_response: bool = True
    transcription_model: str = "gpt-4o-mini-transcribe"
    noise_reduction: str | None = "near_field"


@dataclass(frozen=True, slots=True)
class HistoryItem:
    """A finished turn, replayed into a new model session after a reconnect."""

    role: Literal["user", "assistant", "tool_call", "tool_output"]
    text: str = ""
    call_id: str = ""
    name: str = ""


# -- events ---------------------------------------------------------------------------------


@dataclass(slots=True)  # not frozen: built for every audio delta
class AudioDelta:
    response_id: str
    item_id: str
    payload: str  # base64 μ-law


@dataclass(frozen=True, slots=True)
class SessionReady:
    pass


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    item_id: str
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class UserItem:
    """The caller's turn became a conversation item (its position in the conversation)."""

    item_id: str


@dataclass(frozen=True, slots=True)
class UserTranscript:
    item_id: str
    text: str


@dataclass(frozen=True, slots=True)
class ResponseStarted:
    response_id: str
    # True: started by the bridge's `create_response`; False: the model's own (server VAD);
    # None: the provider cannot tell.
    requested: bool | None = None


@dataclass(frozen=True, slots=True)
class AgentItem:
    response_id: str
    item_id: str


@dataclass(frozen=True, slots=True)
class AgentTranscript:
    response_id: str
    item_id: str
    text: str


@dataclass(frozen=True, slots=True)
class FunctionCall:
    response_id: str
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ResponseDone:
    response_id: str
    status: str  # completed | cancelled | failed | incomplete
    function_calls: tuple[FunctionCall, ...] = ()


@dataclass(frozen=True, slots=True)
class ProviderError:
    code: str
    message: str
    fatal: bool = False
    refused_request: bool = False  # the model refused the bridge's `create_response`


@dataclass(frozen=True, slots=True)
class Closed:
    reason: str
    fatal: bool = False


ProviderEvent = (
    AudioDelta
    | SessionReady
    | SpeechStarted
    | SpeechStopped
    | UserItem
    | UserTranscript
    | ResponseStarted
    | AgentItem
    | AgentTranscript
    | FunctionCall
    | ResponseDone
    | ProviderError
    | Closed
)


class ConnectError(Exception):
    def __init__(self, message: str, *, fatal: bool) -> None:
        super().__init__(message)
        self.fatal = fatal


class RealtimeSession(Protocol):
    """One open model connection."""

    @property
    def server_cancels_on_barge_in(self) -> bool: ...

    def send_audio(self, payload_b64: str) -> bool:
        """Forward caller audio without waiting; False (frame dropped) when the socket is
        closed or backed up."""

    async def send_tool_result(self, call_id: str, output: str) -> None: ...

    async def send_user_text(self, text: str) -> None: ...

    async def create_response(self, instructions: str | None = None) -> None: ...

    async def cancel_response(self) -> None: ...

    async def truncate(self, item_id: str, audio_end_ms: int) -> None: ...

    async def replay(self, history: list[HistoryItem]) -> None: ...

    def events(self) -> AsyncIterator[ProviderEvent]: ...

    async def close(self) -> None: ...


class RealtimeConnector(Protocol):
    async def connect(self, config: SessionConfig) -> RealtimeSession:
        """Open a session and send its configuration; raise ConnectError."""
