"""One ElevenLabs conversation behind the provider-neutral interface.

The agent runs the conversation (speech recognition, turn-taking, its LLM and voice) and
answers on its own, so the session is server-driven: it speaks first (its first message), cuts
itself on barge-in and reports it, and answers after tool results by itself.

A reader task owns the socket from the moment the conversation starts: it answers every `ping`
at once with a `pong` carrying its `event_id` (we never ping ourselves) and queues everything
else. The bridge reads that queue only once Twilio's `start` is known, so agent audio that
arrives before it (the greeting, often) is held, not lost. The queue is bounded: when the bridge
falls behind, reading stops and the socket pushes back.

Agent audio comes in large bursts faster than real time; each burst is handed on in slices of
at most `slice_bytes` (cut on base64 boundaries, no decoding) so Twilio marks keep the playback
position. An `interruption` with id N drops later chunks of older responses (id < N) and keeps
id ≥ N. Responses are told apart by `event_id` plus tool calls (a reply continues under the
same id after its tool results): each part is one neutral response/item. The agent's response
has no end event: a part ends at the next turn, at a tool call, at an interruption, at the close,
or after `idle_end` seconds without audio (it reopens if more of the same id comes).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close
from websockets.protocol import State

from caller_engine.audio.convert import CallerToPcm, PcmToCaller
from caller_engine.realtime.base import (
    SERVER_DRIVEN,
    AgentItem,
    AgentTranscript,
    AgentTranscriptCorrected,
    AudioDelta,
    Capabilities,
    Closed,
    FunctionCall,
    HistoryItem,
    Interrupted,
    ProviderError,
    ProviderEvent,
    ResponseDone,
    ResponseStarted,
    UserItem,
    UserTranscript,
)
from caller_engine.realtime.elevenlabs import wire
from caller_engine.realtime.elevenlabs.gate import InterruptionGate, b64_slices
from caller_engine.realtime.wsframe import MaskKeys, masked_text_frame

CAPABILITIES = Capabilities(
    respond_after_tools=SERVER_DRIVEN.respond_after_tools,
    truncates=False,
    cancels_on_barge_in=True,
    signals_interruption=True,
    speaks_first=True,
)
MAX_UNSENT_BYTES = 64 * 1024
MAX_HELD_MESSAGES = 256  # server messages queued for the bridge (bounded memory)
IDLE_END = 0.5


@dataclass(frozen=True, slots=True)
class _BadFrame:
    detail: str


@dataclass(frozen=True, slots=True)
class _End:
    close: Close | None


_Queued = wire.ServerMessage | _BadFrame | _End


def refusal_message(error: wire.ServerError | None, close: Close | None, paths: list[str]) -> str:
    """One sentence for a refused conversation (close 1008), naming what to change."""
    error_type = error.error_type if error else None
    if error_type == "override_error" or (not error_type and paths and _mentions_override(close)):
        settings = ", ".join(paths) or "the overridden fields"
        return (
            f"ElevenLabs refused this call's overrides ({settings}): allow them on the agent "
            "(Security → Overrides, platform_settings.overrides.conversation_config_override)"
        )
    if error_type in ("missing_dynamic_variable", "missing_dynamic_variable_transfer"):
        return (
            "ElevenLabs refused the conversation: the agent's prompt or first message uses a "
            "dynamic variable this call did not send (add it to the call's agent.metadata)"
        )
    detail = (error.message if error and error.message else None) or (
        close.reason if close and close.reason else "policy violation"
    )
    return f"ElevenLabs refused the conversation: {detail}"


def _mentions_override(close: Close | None) -> bool:
    return close is not None and "override" in close.reason.lower()


def closed_event(
    close: Close | None, error: wire.ServerError | None, override_paths: list[str]
) -> Closed:
    """The neutral end of a conversation, from its close frame and the last `error` frame."""
    code = close.code if close is not None else None
    if error is not None and error.quota:
        return Closed(
            f"ElevenLabs quota exhausted: {error.message}", fatal=True, code="model_unavailable"
        )
    if code == 1000:
        if error is not None and error.error_type == "max_duration_exceeded":
            return Closed("ElevenLabs ended the conversation: maximum duration", ended=True)
        return Closed("the ElevenLabs agent ended the conversation", ended=True, by_tool="end_call")
    if code in (1008, 3000):
        return Closed(
            refusal_message(error, close, override_paths), fatal=True, code="model_refused"
        )
    detail = f"{code} {close.reason}".strip() if close is not None else "no close frame"
    return Closed(f"ElevenLabs conversation closed: {detail}")


def history_text(history: list[HistoryItem]) -> str:
    lines = []
    for item in history:
        if item.role == "user":
            lines.append(f"Caller: {item.text}")
        elif item.role == "assistant":
            lines.append(f"Agent: {item.text}")
        elif item.role == "tool_call":
            lines.append(f"Agent called {item.name}({item.text})")
        else:
            lines.append(f"{item.name or 'tool'} returned: {item.text}")
    return (
        "The phone line to the agent was re-established mid-call; this is the conversation so "
        "far. Continue from it without greeting again.\n" + "\n".join(lines)
    )


class ElevenLabsSession:
    def __init__(
        self,
        ws: ClientConnection,
        metadata: wire.Metadata,
        input_format: wire.AudioFormat,
        output_format: wire.AudioFormat,
        *,
        override_paths: list[str],
        slice_bytes: int = 1920,
        idle_end: float = IDLE_END,
    ) -> None:
        self._ws = ws
        self._protocol = ws.protocol
        self._transport = ws.transport
        self._keys = MaskKeys()
        self.metadata = metadata
        self.conversation_id = metadata.conversation_id
        self.override_paths = override_paths
        self.slice_bytes = slice_bytes
        self.idle_end = idle_end
        self._to_pcm = None if input_format.is_ulaw_8000 else CallerToPcm(input_format.rate)
        self._from_pcm = None if output_format.is_ulaw_8000 else PcmToCaller(output_format.rate)
        self._queue: asyncio.Queue[_Queued] = asyncio.Queue(MAX_HELD_MESSAGES)
        self._last_error: wire.ServerError | None = None
        self.pongs = 0
        self.stale_dropped = 0
        self._reader = asyncio.create_task(self._read(), name="elevenlabs-reader")

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    # -- reading -----------------------------------------------------------------------

    async def _read(self) -> None:
        queue = self._queue
        close: Close | None = None
        try:
            async for raw in self._ws:
                try:
                    msg = wire.parse(raw)
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                    await queue.put(_BadFrame(f"unreadable ElevenLabs message: {exc!r}"))
                    continue
                if msg is None:
                    continue
                if type(msg) is wire.Ping:
                    await self._send(wire.pong(msg.event_id))
                    self.pongs += 1
                    continue
                if type(msg) is wire.ServerError:
                    self._last_error = msg
                await queue.put(msg)
        except ConnectionClosed as exc:
            close = exc.rcvd
        else:
            close = self._ws.protocol.close_rcvd
        await queue.put(_End(close))

    async def events(self) -> AsyncIterator[ProviderEvent]:
        translator = _Translator(self)
        queue = self._queue
        while True:
            if translator.open_with_audio:
                try:
                    async with asyncio.timeout(self.idle_end):
                        item = await queue.get()
                except TimeoutError:
                    for event in translator.pause():
                        yield event
                    continue
            else:
                item = await queue.get()
            if type(item) is _End:
                for event in translator.finish():
                    yield event
                yield closed_event(item.close, self._last_error, self.override_paths)
                return
            if type(item) is _BadFrame:
                yield ProviderError("bad_frame", item.detail)
                continue
            for event in translator.translate(item):  # type: ignore[arg-type]
                yield event

    # -- writing -----------------------------------------------------------------------

    async def _send(self, msg: dict[str, Any]) -> None:
        """A control message; dropped on a closed socket (`events()` reports the close)."""
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(orjson.dumps(msg).decode())

    def send_audio(self, payload_b64: str) -> bool:
        transport = self._transport
        if (
            self._protocol.state is not State.OPEN
            or transport.is_closing()
            or transport.get_write_buffer_size() > MAX_UNSENT_BYTES
        ):
            return False
        if self._to_pcm is None:
            body = wire.AUDIO_PREFIX + payload_b64.encode("ascii") + wire.AUDIO_SUFFIX
        else:
            body = wire.AUDIO_PREFIX + self._to_pcm.convert(payload_b64) + wire.AUDIO_SUFFIX
        transport.write(masked_text_frame(body, self._keys.next()))
        return True

    async def send_tool_result(self, call_id: str, output: str) -> None:
        is_error = False
        with contextlib.suppress(orjson.JSONDecodeError):
            parsed = orjson.loads(output)
            is_error = isinstance(parsed, dict) and "error" in parsed
        await self._send(wire.tool_result(call_id, output, is_error=is_error))

    async def send_user_text(self, text: str) -> None:
        await self._send(wire.user_message(text))

    async def create_response(self, instructions: str | None = None) -> None:
        """The agent answers on its own; instructions (a voicemail message) go as user text."""
        if instructions:
            await self._send(wire.user_message(instructions))

    async def cancel_response(self) -> None:
        return  # no such message: the service cuts its own response on barge-in

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        return  # not offered (capabilities.truncates is False): the service corrects itself

    async def replay(self, history: list[HistoryItem]) -> None:
        """A new socket is a new conversation: the history goes in as background context."""
        if history:
            await self._send(wire.contextual_update(history_text(history)))

    async def close(self) -> None:
        try:
            await self._ws.close()
        finally:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


class _Translator:
    """ElevenLabs messages → neutral events, with the interruption gate and response parts."""

    def __init__(self, session: ElevenLabsSession) -> None:
        self.session = session
        self.prefix = session.conversation_id  # ids stay unique across reconnects
        self.gate = InterruptionGate()
        self.event_id: int | None = None  # the agent response of the current part
        self.rid = ""  # its neutral response id ("" before any)
        self.open = False
        self.paused = False  # ended by idle, reopens on more of the same id
        self.has_audio = False
        self.parts = 0
        self.rid_by_event: dict[int, str] = {}
        self.users = 0

    @property
    def open_with_audio(self) -> bool:
        return self.open and self.has_audio

    def _start(self, event_id: int) -> list[ProviderEvent]:
        if self.open and self.event_id == event_id:
            return []
        if self.paused and self.event_id == event_id:
            self.open, self.paused = True, False
            return [ResponseStarted(self.rid)]
        events = self._end("completed")
        self.parts += 1
        self.event_id = event_id
        self.rid = f"{self.prefix}-{event_id}-{self.parts}"
        self.rid_by_event[event_id] = self.rid
        self.open, self.paused, self.has_audio = True, False, False
        return [*events, ResponseStarted(self.rid), AgentItem(self.rid, self.rid)]

    def _tail(self) -> list[ProviderEvent]:
        converter = self.session._from_pcm
        if converter is None or not self.has_audio:
            return []
        tail = converter.flush()
        return [AudioDelta(self.rid, self.rid, tail)] if tail else []

    def _end(self, status: str, calls: tuple[FunctionCall, ...] = ()) -> list[ProviderEvent]:
        if not self.open:
            self.paused = False
            return []
        events = self._tail() if status == "completed" else []
        self.open = self.paused = False
        return [*events, ResponseDone(self.rid, status, calls)]

    def pause(self) -> list[ProviderEvent]:
        """No audio for a while: this part is done for now."""
        events = self._end("completed")
        self.paused = True
        return events

    def finish(self) -> list[ProviderEvent]:
        return self._end("completed")

    def translate(self, msg: wire.ServerMessage) -> list[ProviderEvent]:
        kind = type(msg)
        if kind is wire.Audio:
            assert isinstance(msg, wire.Audio)
            if not self.gate.admits(msg.event_id):
                self.session.stale_dropped += 1
                return []
            events = self._start(msg.event_id)
            payload = msg.payload
            converter = self.session._from_pcm
            if converter is not None:
                payload = converter.convert(payload)
                if not payload:
                    return events
            self.has_audio = True
            rid = self.rid
            events.extend(
                AudioDelta(rid, rid, p) for p in b64_slices(payload, self.session.slice_bytes)
            )
            return events
        if kind is wire.AgentResponse:
            assert isinstance(msg, wire.AgentResponse)
            if not self.gate.admits(msg.event_id):
                return []
            events = self._start(msg.event_id)
            events.append(AgentTranscript(self.rid, self.rid, msg.text))
            return events
        if kind is wire.UserTranscript:
            assert isinstance(msg, wire.UserTranscript)
            events = self._end("completed")
            self.users += 1
            item = f"{self.prefix}-user-{msg.event_id}-{self.users}"
            return [*events, UserItem(item), UserTranscript(item, msg.text)]
        if kind is wire.Interruption:
            assert isinstance(msg, wire.Interruption)
            if not self.gate.interrupted(msg.event_id):
                return []
            was_open = self.open
            self.open = self.paused = False
            if self.session._from_pcm is not None:
                self.session._from_pcm.reset()
            cut: list[ProviderEvent] = [Interrupted(self.rid)]
            if was_open:
                cut.append(ResponseDone(self.rid, "cancelled"))
            return cut
        if kind is wire.Correction:
            assert isinstance(msg, wire.Correction)
            cut_rid = self.rid_by_event.get(msg.event_id)
            return [AgentTranscriptCorrected(cut_rid, cut_rid, msg.corrected)] if cut_rid else []
        if kind is wire.ToolCall:
            assert isinstance(msg, wire.ToolCall)
            events = self._start(msg.event_id)
            call = FunctionCall(
                self.rid, msg.call_id, msg.name, orjson.dumps(msg.parameters).decode()
            )
            events.append(call)
            events.extend(self._end("completed", (call,)))
            return events
        if kind is wire.ServerError:
            assert isinstance(msg, wire.ServerError)
            code = msg.error_type or ("quota_exceeded" if msg.quota else "error")
            return [ProviderError(code, msg.message)]
        return []
