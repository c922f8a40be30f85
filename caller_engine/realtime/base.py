"""The provider-neutral face of a realtime speech model.

The bridge speaks only these events and this interface; each provider module translates its
own wire protocol. Audio crosses as base64 μ-law strings so that μ-law providers pass Twilio's
payloads through without decoding; providers that need other audio convert inside their module
(`caller_engine.audio`).

Providers differ in who drives the conversation. A client-driven provider (OpenAI Realtime)
waits for the client to ask for a response after tool outputs, lets the client cut the heard
part of an interrupted turn, and may leave cancelling to the client. A server-driven provider
(Gemini Live, ElevenLabs, Nova Sonic) answers on its own after caller speech and tool results,
detects barge-in itself and reports it as `Interrupted`. Each session describes itself with
`Capabilities`; the bridge acts on those flags and never on a provider's name.
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
    # The call's own settings, for providers that take them apart from `instructions` (an
    # agent platform keeps its prompt unless the call brings one).
    greeting: str | None = None
    call_instructions: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the bridge must do for a session, and what the provider does itself."""

    respond_after_tools: bool
    """The bridge asks for a response once a turn's tool outputs are all sent (else the
    provider answers on its own)."""
    truncates: bool
    """On barge-in the bridge tells the provider how much of the agent's turn was heard."""
    cancels_on_barge_in: bool
    """The provider stops its own response when the caller starts talking (else the bridge
    cancels it)."""
    signals_interruption: bool
    """The provider reports barge-in with `Interrupted` (else the bridge acts on
    `SpeechStarted`)."""
    speaks_first: bool = False
    """The provider opens the call with its own first message (configured at connect): the
    bridge does not ask for a greeting."""


CLIENT_DRIVEN = Capabilities(
    respond_after_tools=True, truncates=True, cancels_on_barge_in=True, signals_interruption=False
)
SERVER_DRIVEN = Capabilities(
    respond_after_tools=False, truncates=False, cancels_on_barge_in=True, signals_interruption=True
)


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
class Interrupted:
    """The provider cut its current response because the caller spoke (server-driven barge-in):
    clear the caller's playback and drop the rest of that response's audio."""

    response_id: str


@dataclass(frozen=True, slots=True)
class AgentTranscriptCorrected:
    """The provider cut the agent's item and says what of it the caller heard: the transcript
    keeps `text` and marks the turn interrupted."""

    response_id: str
    item_id: str
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallsCancelled:
    """The provider withdrew function calls it had made: stop them and send no output."""

    call_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ProviderError:
    code: str
    message: str
    fatal: bool = False
    refused_request: bool = False  # the model refused the bridge's `create_response`


@dataclass(frozen=True, slots=True)
class Closed:
    """The session ended. `fatal`: a new session on this provider cannot help."""

    reason: str
    fatal: bool = False
    code: str | None = None
    """With `fatal`: the provider refused the session itself (credentials, access, an invalid
    setup, quota), reported in the stream after connecting had succeeded. The call's error
    code (`model_refused`, `model_unavailable`); the call moves on as if connecting had been
    refused: not retried on this provider, on to a fallback if any. A fatal close without a
    code is a model failure (`model_fatal`) that ends the call."""
    ended: bool = False
    """The provider ended the conversation on purpose (its end-call tool): let the audio
    already sent finish playing, then hang up; no reconnect."""
    by_tool: str | None = None
    """With `ended`: the provider's own tool that ended it (kept with the call's tool calls)."""


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
    | Interrupted
    | AgentTranscriptCorrected
    | ToolCallsCancelled
    | ProviderError
    | Closed
)


class ConnectError(Exception):
    """Opening a session failed. `fatal`: the provider refused it (credentials, model, invalid
    setup) and retrying cannot help; otherwise it was unreachable or over quota."""

    def __init__(self, message: str, *, fatal: bool, code: str | None = None) -> None:
        super().__init__(message)
        self.fatal = fatal
        self.code = code  # the call's error code when fatal (default `model_refused`)


class RealtimeSession(Protocol):
    """One open model conversation (a provider may move it across connections itself)."""

    @property
    def capabilities(self) -> Capabilities: ...

    def send_audio(self, payload_b64: str) -> bool:
        """Forward caller audio without waiting; False (frame dropped) when the socket is
        closed or backed up."""

    async def send_tool_result(self, call_id: str, output: str) -> None: ...

    async def send_user_text(self, text: str) -> None: ...

    async def create_response(self, instructions: str | None = None) -> None:
        """Ask the model to speak now (the greeting; a voicemail message; after a replay),
        steered by `instructions` when given."""

    async def cancel_response(self) -> None:
        """Stop the active response (only called when `cancels_on_barge_in` is False or the
        call must stop the agent mid-turn)."""

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        """Only called when `capabilities.truncates`."""

    async def replay(self, history: list[HistoryItem]) -> None:
        """Seed a fresh session with the conversation so far (after a reconnect or a switch
        of provider); it does not ask for a response."""

    def events(self) -> AsyncIterator[ProviderEvent]: ...

    async def close(self) -> None: ...


class RealtimeConnector(Protocol):
    async def connect(self, config: SessionConfig) -> RealtimeSession:
        """Open a session and send its configuration; raise ConnectError."""
