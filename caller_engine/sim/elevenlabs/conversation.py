"""One emulated conversation on the ElevenLabs Agents WebSocket.

Order and behaviour follow the service: the client's `conversation_initiation_client_data`
comes first (overrides the agent does not allow, or a missing dynamic variable, close 1008);
then `conversation_initiation_metadata`, and the first message. Agent audio leaves in irregular
bursts of 0.25–2.5 s, faster than real time; the agent's text (`agent_response`) and its audio
share the response's `event_id`. Caller speech is found by frame energy. Speech while the agent
is still audible (by the service's own clock: it cannot know what the phone played) is a
barge-in: `interruption` with a new id, a few stale chunks of the cut response (lower id), an
`agent_response_correction` when enabled, then the caller's `user_transcript` and the reply,
which carries the interruption's id (an equal id, as observed after text input). Only the
agent's `client_events` are sent. Client tool calls wait for `client_tool_result`. The
`end_call` system tool closes with 1000 right after its last audio chunk is sent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSMsgType, web

from caller_engine.audio import mulaw
from caller_engine.realtime.elevenlabs.wire import AudioFormat, audio_format
from caller_engine.sim.elevenlabs import validation
from caller_engine.sim.elevenlabs.agent import EmulatedAgent, fill_variables, required_variables
from caller_engine.sim.elevenlabs.audio import bytes_per_ms, energy, from_ulaw
from caller_engine.sim.openai.realtime.script import RealtimeScript, ScriptedResponse
from caller_engine.sim.openai.realtime.vad import VadSettings, VoiceActivityDetector

if TYPE_CHECKING:
    from caller_engine.sim.elevenlabs.server import ElevenLabsEmulator

QUOTA_MESSAGE = "received 1002 (protocol error) This request exceeds your quota limit."
ALWAYS_SENT = frozenset({"error", "client_tool_call"})
DEFAULT_TOOL_TIMEOUT = 20.0


@dataclass
class Speech:
    """The agent response being generated (and, by the service's clock, played)."""

    event_id: int
    text: str
    started: float
    total_ms: float = 0.0
    pending: list[bytes] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


@dataclass
class ToolCallRecord:
    name: str
    call_id: str
    parameters: dict[str, Any]
    event_id: int
    result: dict[str, Any] | None = None


class EmulatedConversation:
    def __init__(
        self,
        emulator: ElevenLabsEmulator,
        ws: web.WebSocketResponse,
        agent: EmulatedAgent,
        script: RealtimeScript,
    ) -> None:
        self.emulator = emulator
        self.agent = agent
        self.script = script
        self.conversation_id = f"conv_{emulator.next_serial():026d}"
        self.loop = asyncio.get_running_loop()
        self.initiation: dict[str, Any] | None = None
        self.bare = False  # the client skipped the initiation message
        self.received: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []  # audio events without their audio
        self.input_audio = bytearray()
        self.output_audio: dict[int, bytearray] = {}
        self.violations: list[str] = []
        self.pongs: list[int] = []
        self.tool_calls: list[ToolCallRecord] = []
        self.contextual_updates: list[str] = []
        self.user_messages: list[str] = []
        self.transcripts: list[str] = []
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self.variables: dict[str, Any] = {}
        self.input_format: AudioFormat = audio_format(agent.input_format) or AudioFormat(
            "pcm", 16000
        )
        self.output_format: AudioFormat = audio_format(agent.output_format) or AudioFormat(
            "pcm", 16000
        )
        self._ws = ws
        self._rng = random.Random(emulator.seed)
        self._last_id = 0
        self._ping_ids = itertools.count(emulator.ping_id_start)
        self._pings: dict[int, float] = {}
        self._rtt_ms: int | None = None
        self._speech: Speech | None = None
        self._audible_until = 0.0
        self._interruption_id: int | None = None
        self._tool_waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._last_input = self.loop.time()
        self._tasks: set[asyncio.Task[None]] = set()
        self._send_lock = asyncio.Lock()
        frame_bytes, frame_energy = energy(self.input_format)
        self._vad = VoiceActivityDetector(
            VadSettings(emulator.vad_energy_threshold, 300, emulator.silence_ms),
            frame_bytes=frame_bytes,
            energy=frame_energy,
        )

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def first_message_sent(self) -> bool:
        return any(e.get("type") == "conversation_initiation_metadata" for e in self.sent)

    async def run(self) -> None:
        try:
            await self._serve()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._speech is not None and self._speech.task is not None:
                self._speech.task.cancel()
            for waiter in self._tool_waiters.values():
                waiter.cancel()
            if self.close_code is None:
                self.close_code = self._ws.close_code
            self.closed.set()

    async def _serve(self) -> None:
        first = True
        async for msg in self._ws:
            if msg.type is not WSMsgType.TEXT:
                if msg.type is WSMsgType.BINARY:
                    await self._refuse(validation.Problem("Invalid message received", True))
                break
            try:
                data = orjson.loads(msg.data)
            except orjson.JSONDecodeError:
                await self._refuse(validation.Problem("Invalid message received (not JSON)", True))
                break
            self._last_input = self.loop.time()
            if first:
                first = False
                if not await self._start(data):
                    break
                continue
            if not await self._handle(data):
                break

    async def _start(self, data: Any) -> bool:
        if isinstance(data, dict) and data.get("type") == validation.INIT:
            self.received.append(data)
            problem = validation.check_initiation(data)
            if problem is not None:
                await self._refuse(problem)
                return False
            self.initiation = data
            if not await self._check_agent_rules(data):
                return False
        else:
            # Tolerated like the service does, but then the first message is skipped.
            self.bare = True
            self.violations.append("the first message was not conversation_initiation_client_data")
        if self.emulator.quota_exhausted:
            await self._send_raw({"type": "error", "message": QUOTA_MESSAGE})
            await self.close(1002, "This request exceeds your quota limit.")
            return False
        await self._emit(
            "conversation_initiation_metadata",
            "conversation_initiation_metadata_event",
            {
                "conversation_id": self.conversation_id,
                "agent_output_audio_format": self.agent.output_format,
                "user_input_audio_format": self.agent.input_format,
            },
        )
        self._spawn(self._pinger())
        if not self.bare:
            greeting = self._first_message()
            if greeting is not None:
                self._say(greeting, self._new_id())
        if self.bare:
            return await self._handle(data)
        return True

    async def _check_agent_rules(self, init: dict[str, Any]) -> bool:
        override = init.get("conversation_config_override") or {}
        refused = self.agent.refused_overrides(override)
        if refused:
            await self._fail(
                1008,
                "override_error",
                f"Override for field '{refused[0]}' is not allowed by config.",
            )
            return False
        self.variables = dict(init.get("dynamic_variables") or {})
        agent_override = override.get("agent") or {}
        prompt = (agent_override.get("prompt") or {}).get("prompt") or self.agent.prompt
        first = agent_override.get("first_message", self.agent.first_message)
        missing = sorted(required_variables(prompt, first) - set(self.variables))
        if missing:
            await self._fail(
                1008,
                "missing_dynamic_variable",
                f"Missing required dynamic variables in first message: {set(missing)}",
            )
            return False
        return True

    def _first_message(self) -> ScriptedResponse | None:
        override = ((self.initiation or {}).get("conversation_config_override") or {}).get(
            "agent"
        ) or {}
        text = override.get("first_message", self.agent.first_message)
        if text == "":
            return None  # an explicitly empty first message: the agent waits
        line = self.script.next_response()  # its audio (and tool calls) voice the first message
        if text is None or self.emulator.speak_script_first_line:
            text = line.text
        return ScriptedResponse(
            text=fill_variables(text, self.variables),
            audio=line.audio,
            audio_ms=line.audio_ms,
            tool_calls=line.tool_calls,
        )

    async def close(self, code: int, reason: str = "") -> None:
        if self.close_code is None:
            self.close_code = code
        if not self._ws.closed:
            await self._ws.close(code=code, message=reason.encode()[:120])

    async def drop(self, code: int = 1011, error_type: str = "unknown_websocket_crash") -> None:
        """Fail the conversation from the service's side (an error frame, then the close)."""
        await self._fail(code, error_type, "The conversation ended unexpectedly.")

    async def _fail(self, code: int, error_type: str, message: str) -> None:
        await self._send_raw(
            {
                "type": "error",
                "error_event": {"code": code, "message": message, "error_type": error_type},
            }
        )
        await self.close(code, message)

    async def _refuse(self, problem: validation.Problem) -> None:
        self.violations.append(problem.message)
        if problem.fatal:
            await self._fail(1008, problem.error_type, problem.message)

    # -- client messages ---------------------------------------------------------------

    async def _handle(self, data: Any) -> bool:
        if isinstance(data, dict) and "user_audio_chunk" in data and "type" not in data:
            audio, problem = validation.check_audio(data)
            if problem is not None or audio is None:
                await self._refuse(problem or validation.Problem("bad audio", True))
                return False
            self._audio_in(audio)
            return True
        problem = validation.check_message(data)
        self.received.append(data if isinstance(data, dict) else {"raw": data})
        if self.emulator.on_client_event is not None and isinstance(data, dict):
            self.emulator.on_client_event(self, data, self.loop.time())
        if problem is not None:
            await self._refuse(problem)
            if problem.fatal:
                return False
        kind = data.get("type")
        if kind == validation.INIT:
            await self._refuse(validation.Problem("conversation already initiated", True))
            return False
        if kind == "pong":
            event_id = data["event_id"]
            sent_at = self._pings.pop(event_id, None)
            if sent_at is None:
                self.violations.append(f"pong for unknown ping {event_id}")
            else:
                self._rtt_ms = round((self.loop.time() - sent_at) * 1000)
            self.pongs.append(event_id)
        elif kind == "client_tool_result":
            waiter = self._tool_waiters.pop(data["tool_call_id"], None)
            if waiter is None:
                self.violations.append(f"result for unknown tool call {data['tool_call_id']}")
            elif not waiter.done():
                waiter.set_result(data)
        elif kind == "contextual_update":
            self.contextual_updates.append(data["text"])
        elif kind == "user_message":
            text = str(data.get("text") or "")
            self.user_messages.append(text)
            await self._user_turn(text, spoken=False)
        return True

    def _audio_in(self, audio: bytes) -> None:
        self.input_audio.extend(audio)
        if self.emulator.on_input_audio is not None:
            self.emulator.on_input_audio(self, audio, self.loop.time())
        for event in self._vad.feed(audio):
            if event.kind == "started":
                self._spawn(self._barge_in())
            else:
                self._spawn(self._user_turn(self.script.next_transcript(), spoken=True))

    # -- agent speech ------------------------------------------------------------------

    def _new_id(self) -> int:
        self._last_id += 1
        return self._last_id

    def _audible(self) -> bool:
        speech = self._speech
        speaking = speech is not None and speech.task is not None and not speech.task.done()
        return speaking or self.loop.time() < self._audible_until

    async def _barge_in(self) -> None:
        if not self._audible() or "interruption" not in self.agent.client_events:
            return
        speech = self._speech
        if speech is not None and speech.task is not None:
            speech.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await speech.task
        self._interruption_id = self._new_id()
        await self._emit("interruption", "interruption_event", {"event_id": self._interruption_id})
        if speech is None:
            return
        elapsed_ms = (self.loop.time() - speech.started) * 1000
        self._audible_until = 0.0
        stale = speech.pending[: self.emulator.stale_chunks]
        while len(stale) < self.emulator.stale_chunks:
            stale.append(from_ulaw(mulaw.tone(250, 330), self.output_format))
        for chunk in stale:
            await self._send_audio(chunk, speech.event_id)
        if "agent_response_correction" in self.agent.client_events and speech.text:
            fraction = min(1.0, elapsed_ms / speech.total_ms) if speech.total_ms else 1.0
            corrected = self.emulator.correction(speech.text, fraction)
            await self._emit(
                "agent_response_correction",
                "agent_response_correction_event",
                {
                    "original_agent_response": speech.text,
                    "corrected_agent_response": corrected,
                    "event_id": speech.event_id,
                },
            )
        self._speech = None

    async def _user_turn(self, text: str, *, spoken: bool) -> None:
        if not spoken and self._audible():
            await self._barge_in()
        interrupted = self._interruption_id
        self._interruption_id = None
        turn_id = interrupted if interrupted is not None else self._new_id()
        if spoken:
            self.transcripts.append(text)
            await self._emit(
                "user_transcript",
                "user_transcription_event",
                {"user_transcript": text, "event_id": turn_id},
            )
        equal = interrupted is not None and self.emulator.equal_id_reply
        self._say(self.script.next_response(), turn_id if equal else self._new_id())

    def _say(self, line: ScriptedResponse, event_id: int) -> None:
        speech = Speech(event_id, fill_variables(line.text, self.variables), self.loop.time())
        self._speech = speech
        speech.task = asyncio.create_task(self._speak(line, speech))

    def _chunks(self, audio: bytes) -> list[bytes]:
        frame = int(bytes_per_ms(self.output_format) * 20)  # whole 20 ms frames per chunk
        low, high = self.emulator.chunk_ms
        chunks: list[bytes] = []
        offset = 0
        while offset < len(audio):
            size = max(1, self._rng.randint(low, high) // 20) * frame
            chunks.append(audio[offset : offset + size])
            offset += size
        return chunks

    async def _speak(self, line: ScriptedResponse, speech: Speech) -> None:
        while True:
            await self._speak_line(line, speech)
            client_calls = False
            for name, args in line.tool_calls:
                if name == "end_call" and self.agent.end_call_tool:
                    await self._end_call(speech.event_id, args)
                    return
                await self._client_tool(name, args, speech.event_id)
                client_calls = True
            if not client_calls:
                return
            line = self.script.next_response()
            speech.text = fill_variables(line.text, self.variables)

    async def _speak_line(self, line: ScriptedResponse, speech: Speech) -> None:
        if not speech.text and line.audio is None and line.tool_calls:
            return
        ulaw = line.audio if line.audio is not None else mulaw.tone(line.audio_ms)
        audio = from_ulaw(ulaw, self.output_format)
        speech.pending = self._chunks(audio)
        speech.total_ms += len(audio) / bytes_per_ms(self.output_format)
        text_sent = False
        if speech.text and self.emulator.text_first:
            await self._agent_response(speech)
            text_sent = True
        while speech.pending:
            chunk = speech.pending.pop(0)
            await self._send_audio(chunk, speech.event_id)
            if not text_sent and speech.text:
                await self._agent_response(speech)
                text_sent = True
            if self.emulator.chunk_interval:
                await asyncio.sleep(self.emulator.chunk_interval)
            else:
                await asyncio.sleep(0)

    async def _agent_response(self, speech: Speech) -> None:
        await self._emit(
            "agent_response",
            "agent_response_event",
            {"agent_response": speech.text, "event_id": speech.event_id},
        )

    async def _send_audio(self, chunk: bytes, event_id: int) -> None:
        now = self.loop.time()
        seconds = len(chunk) / bytes_per_ms(self.output_format) / 1000
        self._audible_until = max(now, self._audible_until) + seconds / self.emulator.audible_speed
        self.output_audio.setdefault(event_id, bytearray()).extend(chunk)
        await self._emit(
            "audio",
            "audio_event",
            {"audio_base_64": base64.b64encode(chunk).decode(), "event_id": event_id},
        )

    async def _client_tool(self, name: str, args: dict[str, Any], event_id: int) -> None:
        config = self.emulator.client_tool(self.agent, name)
        if config is None:
            self.violations.append(f"the agent has no client tool '{name}'")
            return
        call_id = f"toolu_{self.emulator.next_serial():08d}"
        record = ToolCallRecord(name, call_id, args, event_id)
        self.tool_calls.append(record)
        waiter: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        self._tool_waiters[call_id] = waiter
        await self._emit(
            "client_tool_call",
            "client_tool_call",
            {"tool_name": name, "tool_call_id": call_id, "parameters": args, "event_id": event_id},
        )
        if config.get("expects_response") is False:
            return
        timeout = float(config.get("response_timeout_secs") or DEFAULT_TOOL_TIMEOUT)
        try:
            record.result = await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            self._tool_waiters.pop(call_id, None)
            self.violations.append(f"no client_tool_result for {name} within {timeout:g} s")

    async def _end_call(self, event_id: int, args: dict[str, Any]) -> None:
        if "agent_tool_response" in self.agent.client_events:
            await self._emit(
                "agent_tool_response",
                "agent_tool_response",
                {
                    "tool_name": "end_call",
                    "tool_call_id": f"toolu_{self.emulator.next_serial():08d}",
                    "tool_type": "system",
                    "is_error": False,
                    "is_called": True,
                    "event_id": event_id,
                },
            )
        await self.close(1000, "")

    # -- keepalive ---------------------------------------------------------------------

    async def _pinger(self) -> None:
        interval = self.emulator.ping_interval
        while not self._ws.closed:
            await asyncio.sleep(interval)
            now = self.loop.time()
            if now - self._last_input > self.emulator.input_timeout:
                await self._fail(
                    1002, "transport_receive_timeout", "No user message received in time."
                )
                return
            event_id = next(self._ping_ids)
            self._pings[event_id] = now
            await self._emit("ping", "ping_event", {"event_id": event_id, "ping_ms": self._rtt_ms})

    # -- sending -----------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _emit(self, kind: str, key: str, payload: dict[str, Any]) -> None:
        if kind not in self.agent.client_events and kind not in ALWAYS_SENT:
            return
        await self._send_raw({"type": kind, key: payload})

    async def _send_raw(self, event: dict[str, Any]) -> None:
        if self._ws.closed:
            return
        if event.get("type") == "audio":
            body = event["audio_event"]
            self.sent.append(
                {"type": "audio", "event_id": body["event_id"], "bytes": len(body["audio_base_64"])}
            )
        else:
            self.sent.append(event)
        if self.emulator.on_server_event is not None:
            self.emulator.on_server_event(self, event, self.loop.time())
        async with self._send_lock:
            with contextlib.suppress(ConnectionResetError):
                await self._ws.send_str(orjson.dumps(event).decode())
