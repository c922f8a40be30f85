"""Amazon Nova Sonic behind the provider-neutral interface.

Server-driven: the service detects the end of the caller's turn, answers on its own after
tool results, and reports barge-in (a `{ "interrupted" : true }` text and/or a content end
with stop reason INTERRUPTED), which becomes `Interrupted`. Only FINAL text reaches the
transcript. Caller audio is converted μ-law → PCM16 at 8 kHz and model audio back, through
the shared per-call converters.

A stream lives about 8 minutes, so after `renew_after` seconds, at a quiet moment (no
response under way, no tool call open), a new stream is opened and set up with the system
prompt, the conversation so far as text and the last seconds of caller audio; caller audio
then moves to it in one step and the old stream is ended cleanly. An unexpected end of the
stream becomes `Closed`, and the bridge reconnects or fails over. The service answers the
request before it reads the setup, so a refused setup (a validationException before any
output) or a credential error arrives in the stream: `Closed(code="model_refused")`.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from loguru import logger

from caller_engine.audio.convert import CallerToPcm, PcmToCaller
from caller_engine.aws.h2client import H2Error
from caller_engine.realtime.base import (
    SERVER_DRIVEN,
    AgentItem,
    AgentTranscript,
    AudioDelta,
    Capabilities,
    Closed,
    ConnectError,
    FunctionCall,
    HistoryItem,
    Interrupted,
    ProviderEvent,
    ResponseDone,
    ResponseStarted,
    SessionConfig,
    UserItem,
    UserTranscript,
)
from caller_engine.realtime.nova_sonic import events as ev
from caller_engine.realtime.nova_sonic.stream import (
    BedrockStream,
    BedrockTarget,
    StreamFailed,
    StreamRefused,
)

INTERRUPTED = '{ "interrupted" : true }'
# Caller audio waiting for the service's flow-control window before frames are dropped:
# about 10 s (a 20 ms frame is about 900 bytes once wrapped), room for a renewal's replay.
MAX_UNSENT_BYTES = 512 * 1024
# A renewed stream first hears the caller's audio since their last transcribed turn, at most
# the last 3 s of 20 ms frames, in events of 200 ms.
REPLAY_AUDIO_FRAMES = 150
REPLAY_EVENT_FRAMES = 10
CLOSE_GRACE = 0.5  # seconds to let the service end the stream after sessionEnd
STREAM_LIMIT = 480.0  # seconds the service keeps a stream open
RENEW_MARGIN = 15.0  # a forced renewal starts this long before the limit
# In-stream errors that refuse the session whenever they come (lower-cased exception types).
ACCESS_ERRORS = frozenset(
    {
        "accessdeniedexception",
        "unrecognizedclientexception",
        "invalidsignatureexception",
        "expiredtokenexception",
    }
)
SILENCE_TIMEOUT = "InternalErrorCode=531"  # a validationException the service recovers from


@dataclass(frozen=True, slots=True)
class NovaSonicOptions:
    target: BedrockTarget
    renew_after: float = 360.0
    renew_wait: float = 60.0  # how long renewal waits for a quiet moment before forcing it
    endpointing: str = "MEDIUM"


class _Stream:
    """One stream of the conversation and the names it was set up with."""

    def __init__(self, bedrock: BedrockStream) -> None:
        self.bedrock = bedrock
        self.prompt = str(uuid.uuid4())
        self.audio_content = str(uuid.uuid4())
        self.audio_started = False
        self.audio_prefix, self.audio_suffix = ev.audio_input_parts(self.prompt, self.audio_content)
        self.reader: asyncio.Task[None] | None = None
        self.opened_at = asyncio.get_running_loop().time()
        self.answered = False  # an output event arrived: the setup was accepted
        self.tool_uses: set[str] = set()  # toolUseIds this stream asked for


class NovaSonicSession:
    def __init__(self, options: NovaSonicOptions, config: SessionConfig) -> None:
        self.options = options
        self.config = config
        self._events: asyncio.Queue[ProviderEvent] = asyncio.Queue()
        self._to_pcm = CallerToPcm(ev.RATE)
        self._to_caller = PcmToCaller(ev.RATE)
        self._recent: deque[bytes] = deque(maxlen=REPLAY_AUDIO_FRAMES)
        self._stream: _Stream | None = None
        self._history: list[HistoryItem] = []
        self._closing = False
        self._closed = False
        self.renewals = 0
        self._renewer: asyncio.Task[None] | None = None
        # translation state of the current stream
        self._response: str | None = None  # the active response id
        self._last_response = ""
        self._interrupted: set[str] = set()
        self._contents: dict[str, dict[str, Any]] = {}  # contentId → contentStart + texts
        self._audio_item: str | None = None  # the agent item of the response's latest audio
        self._agent_text: dict[str, str] = {}
        self._open_tools: set[str] = set()
        self._tool_names: dict[str, str] = {}
        self._quiet = asyncio.Event()

    @property
    def capabilities(self) -> Capabilities:
        return SERVER_DRIVEN

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    async def open(cls, options: NovaSonicOptions, config: SessionConfig) -> NovaSonicSession:
        session = cls(options, config)
        session._stream = await session._new_stream()
        session._stream.reader = asyncio.create_task(session._read(session._stream))
        session._renewer = asyncio.create_task(session._renew_loop())
        return session

    async def _new_stream(self) -> _Stream:
        try:
            bedrock = await BedrockStream.open(self.options.target)
        except StreamRefused as exc:
            raise ConnectError(str(exc), fatal=exc.fatal) from exc
        except StreamFailed as exc:
            raise ConnectError(str(exc), fatal=False) from exc
        stream = _Stream(bedrock)
        bedrock.send_event(ev.session_start(self.options.target.model_id, self.options.endpointing))
        bedrock.send_event(ev.prompt_start(stream.prompt, self.config))
        for event in ev.text_content(
            stream.prompt, str(uuid.uuid4()), "SYSTEM", self.config.instructions, interactive=False
        ):
            bedrock.send_event(event)
        return stream

    def _send_history(self, stream: _Stream, history: list[HistoryItem]) -> None:
        for role, text in ev.history_turns(history):
            for event in ev.text_content(
                stream.prompt, str(uuid.uuid4()), role, text, interactive=False
            ):
                stream.bedrock.send_event(event)

    def _start_audio(self, stream: _Stream) -> None:
        if not stream.audio_started:
            stream.audio_started = True
            stream.bedrock.send_event(ev.audio_content_start(stream.prompt, stream.audio_content))

    # -- the interface ---------------------------------------------------------------------

    def send_audio(self, payload_b64: str) -> bool:
        stream = self._stream
        if stream is None or not stream.audio_started:
            if stream is None or self._closing:
                return False
            self._start_audio(stream)
        bedrock = stream.bedrock
        if not bedrock.open_for_sending or bedrock.buffered > MAX_UNSENT_BYTES:
            return False
        pcm = self._to_pcm.convert(payload_b64)
        self._recent.append(pcm)
        try:
            bedrock.send_raw(stream.audio_prefix + pcm + stream.audio_suffix)
        except H2Error:
            return False
        return True

    def _send(self, events: list[dict[str, Any]]) -> None:
        stream = self._stream
        if stream is None or self._closing:
            return
        self._start_audio(stream)
        with contextlib.suppress(H2Error):
            for event in events:
                stream.bedrock.send_event(event)

    async def send_tool_result(self, call_id: str, output: str) -> None:
        stream = self._stream
        self._open_tools.discard(call_id)
        self._note_quiet()
        self._history.append(HistoryItem("tool_output", output, call_id))
        if stream is None:
            return
        if call_id in stream.tool_uses:
            self._send(ev.tool_result(stream.prompt, str(uuid.uuid4()), call_id, output))
        else:
            # Asked on a stream since renewed: this one knows the call from the history.
            name = self._tool_names.get(call_id, "the tool")
            await self.send_user_text(f"[Result of the earlier {name}: {output}]")

    async def send_user_text(self, text: str) -> None:
        stream = self._stream
        if stream is not None:
            self._send(
                ev.text_content(stream.prompt, str(uuid.uuid4()), "USER", text, interactive=True)
            )

    async def create_response(self, instructions: str | None = None) -> None:
        """There is no response request: an interactive USER text asks the model to speak
        (the system prompt is already the session's, so only the cue after it is sent)."""
        cue = instructions or "Please continue."
        if cue.startswith(self.config.instructions):
            cue = cue[len(self.config.instructions) :].strip() or ev.SPEAK_FIRST_CUE
        await self.send_user_text(cue)

    async def cancel_response(self) -> None:
        """The protocol has no cancel: the service stops on its own when the caller speaks."""

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        """Not used: the service keeps its own account of what was said."""

    async def replay(self, history: list[HistoryItem]) -> None:
        stream = self._stream
        if stream is None or stream.audio_started:
            return
        self._history = list(history)
        self._send_history(stream, history)
        self._start_audio(stream)

    async def events(self) -> AsyncIterator[ProviderEvent]:
        while True:
            event = await self._events.get()
            yield event
            if type(event) is Closed:
                return

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._renewer is not None:
            self._renewer.cancel()
        stream, self._stream = self._stream, None
        if stream is not None:
            await self._end_stream(stream)
        self._emit_closed("closed")

    async def _end_stream(self, stream: _Stream) -> None:
        """End a stream cleanly: close the audio content, the prompt, the session and the
        signature chain; give the service a moment to end its side, then drop it."""
        bedrock = stream.bedrock
        with contextlib.suppress(H2Error):
            if stream.audio_started:
                bedrock.send_event(ev.content_end(stream.prompt, stream.audio_content))
            bedrock.send_event(ev.prompt_end(stream.prompt))
            bedrock.send_event(ev.session_end())
        bedrock.end()
        if stream.reader is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(stream.reader), CLOSE_GRACE)
            stream.reader.cancel()
        with contextlib.suppress(H2Error, OSError):
            await asyncio.wait_for(bedrock.close(), CLOSE_GRACE)

    def _emit_closed(self, reason: str, *, refused: bool = False) -> None:
        if not self._closed:
            self._closed = True
            code = "model_refused" if refused else None
            self._events.put_nowait(Closed(reason, fatal=refused, code=code))

    # -- output ----------------------------------------------------------------------------

    async def _read(self, stream: _Stream) -> None:
        reason, refused = "the service ended the stream", False
        try:
            async for event in stream.bedrock.events():
                stream.answered = True
                if stream is self._stream:
                    self._translate(event)
        except StreamFailed as exc:
            reason = str(exc)
            refused = refuses(exc, answered=stream.answered)
        if stream is self._stream and not self._closing:
            self._stream = None
            self._emit_closed(reason, refused=refused)
            await stream.bedrock.close()

    def _translate(self, event: dict[str, Any]) -> None:
        body: dict[str, Any]
        ((name, body),) = event.get("event", {}).items()
        put = self._events.put_nowait
        if name == "audioOutput":
            response = self._begin_response(body)
            item = self._audio_item or body.get("contentId", "")
            payload = self._to_caller.convert(body.get("content", ""))
            if payload and response not in self._interrupted:
                put(AudioDelta(response, item, payload))
        elif name == "contentStart":
            self._contents[body.get("contentId", "")] = {**body, "text": []}
            if body.get("type") == "AUDIO" and body.get("role") == "ASSISTANT":
                response = self._begin_response(body)
                self._audio_item = body.get("contentId", "")
                put(AgentItem(response, self._audio_item))
        elif name == "textOutput":
            content = self._contents.get(body.get("contentId", ""))
            text = body.get("content", "")
            if (
                text.strip() == INTERRUPTED.strip()
                or text.replace(" ", "") == '{"interrupted":true}'
            ):
                self._interrupt()
            elif content is not None:
                content["text"].append(text)
        elif name == "contentEnd":
            self._content_end(body)
        elif name == "toolUse":
            response = self._response or self._last_response
            call_id = body.get("toolUseId", "")
            self._open_tools.add(call_id)
            if self._stream is not None:
                self._stream.tool_uses.add(call_id)
            self._tool_names[call_id] = body.get("toolName", "")
            arguments = body.get("content") or "{}"
            self._history.append(
                HistoryItem("tool_call", arguments, call_id, body.get("toolName", ""))
            )
            put(FunctionCall(response, call_id, body.get("toolName", ""), arguments))
        elif name == "completionEnd":
            self._end_response(
                "cancelled" if body.get("stopReason") == "INTERRUPTED" else "completed"
            )

    def _begin_response(self, body: dict[str, Any]) -> str:
        if self._response is None:
            self._response = f"{body.get('completionId', '')}:{uuid.uuid4().hex[:8]}"
            self._last_response = self._response
            self._audio_item = None
            self._events.put_nowait(ResponseStarted(self._response))
        return self._response

    def _end_response(self, status: str) -> None:
        response, self._response = self._response, None
        if response is not None:
            self._events.put_nowait(ResponseDone(response, status))
        self._note_quiet()

    def _interrupt(self) -> None:
        """Barge-in: on the active response, or on the last one while its audio plays."""
        response = self._response or self._last_response
        if not response or response in self._interrupted:
            return
        self._interrupted.add(response)
        self._to_caller.reset()
        self._events.put_nowait(Interrupted(response))

    def _content_end(self, body: dict[str, Any]) -> None:
        content = self._contents.pop(body.get("contentId", ""), None)
        stop = body.get("stopReason", "")
        if content is None:
            return
        if content.get("type") == "AUDIO":
            self._to_caller.flush()
            return
        if content.get("type") != "TEXT":
            return
        stage = _generation_stage(content.get("additionalModelFields"))
        text = "".join(content["text"]).strip()
        role = content.get("role")
        put = self._events.put_nowait
        if role == "USER" and stage != "SPECULATIVE" and text:
            self._recent.clear()  # that turn is heard: a renewal must not replay it
            item = content.get("contentId", "")
            put(UserItem(item))
            put(UserTranscript(item, text))
            self._history.append(HistoryItem("user", text))
        elif role == "ASSISTANT" and stage == "FINAL":
            if text:
                response = self._begin_response(content)
                item = self._audio_item
                if item is None:
                    item = self._audio_item = content.get("contentId", "")
                    put(AgentItem(response, item))
                joined = f"{self._agent_text.get(item, '')} {text}".strip()
                self._agent_text[item] = joined
                put(AgentTranscript(response, item, joined))
                self._history.append(HistoryItem("assistant", text))
            if stop == "INTERRUPTED":
                self._interrupt()
                self._end_response("cancelled")
            elif stop == "END_TURN":
                self._end_response("completed")

    # -- renewal ---------------------------------------------------------------------------

    @property
    def quiet(self) -> bool:
        return self._response is None and not self._open_tools

    def _note_quiet(self) -> None:
        if self.quiet:
            self._quiet.set()

    async def _wait_quiet(self, within: float) -> None:
        """Until no response is under way and no tool call is open (or `within` passed)."""
        if within <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while not self.quiet:
                    self._quiet.clear()
                    await self._quiet.wait()

    async def _renew_loop(self) -> None:
        options = self.options
        loop = asyncio.get_running_loop()
        while not self._closing:
            stream = self._stream
            if stream is None:
                return
            await asyncio.sleep(max(0.0, stream.opened_at + options.renew_after - loop.time()))
            if self._closing or self._stream is not stream:
                continue
            # Forced after `renew_wait`, and always in time for the service's limit.
            deadline = min(
                stream.opened_at + options.renew_after + options.renew_wait,
                stream.opened_at + STREAM_LIMIT - RENEW_MARGIN,
            )
            await self._wait_quiet(deadline - loop.time())
            if self._closing or self._stream is not stream:
                continue
            try:
                await self.renew(deadline)
            except ConnectError as exc:
                # The current stream goes on; its end (if it comes) reconnects as usual.
                logger.warning("Nova Sonic stream renewal failed: {}", exc)
                await asyncio.sleep(1.0)

    async def renew(self, deadline: float | None = None) -> None:
        """Move the conversation to a new stream now: at the next quiet moment, or at
        `deadline` (loop time; default `renew_wait` from now). Raise ConnectError when the
        new stream cannot be opened."""
        old = self._stream
        if old is None or self._closing:
            return
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + self.options.renew_wait
        new = await self._new_stream()
        self._send_history(new, self._history)
        self._start_audio(new)
        await self._wait_quiet(deadline - loop.time())
        if self._stream is not old or self._closing:
            await new.bedrock.close()
            return
        # One step: the recent caller audio, then the switch; nothing is lost in between.
        recent = list(self._recent)
        with contextlib.suppress(H2Error):
            for start in range(0, len(recent), REPLAY_EVENT_FRAMES):
                pcm = b"".join(
                    map(binascii.a2b_base64, recent[start : start + REPLAY_EVENT_FRAMES])
                )
                content = binascii.b2a_base64(pcm, newline=False)
                new.bedrock.send_raw(new.audio_prefix + content + new.audio_suffix)
        self._stream = new
        self._contents.clear()
        self._audio_item = None
        if self._response is not None:  # forced mid-reply: the rest of it is not coming
            self._end_response("incomplete")
        new.reader = asyncio.create_task(self._read(new))
        self.renewals += 1
        age = asyncio.get_running_loop().time() - old.opened_at
        logger.info("Nova Sonic stream renewed after {:.0f} s (renewal {})", age, self.renewals)
        await self._end_stream(old)


def refuses(exc: StreamFailed, *, answered: bool) -> bool:
    """Whether an in-stream error refuses the session (no new stream can help): a credential
    or access error at any time, or a validationException before the stream said anything
    (the service refused the setup: model, voice, tools, prompt)."""
    kind = exc.error_type.lower()
    if kind in ACCESS_ERRORS:
        return True
    return kind == "validationexception" and not answered and SILENCE_TIMEOUT not in exc.message


def _generation_stage(fields: Any) -> str:
    if not isinstance(fields, str):
        return ""
    try:
        data = orjson.loads(fields)
    except orjson.JSONDecodeError:
        return ""
    return str(data.get("generationStage", "")) if isinstance(data, dict) else ""


class NovaSonicConnector:
    def __init__(self, options: NovaSonicOptions) -> None:
        self.options = options

    async def connect(self, config: SessionConfig) -> NovaSonicSession:
        return await NovaSonicSession.open(self.options, config)
