"""Emulator of the Gemini Live API (BidiGenerateContent over WebSocket, v1beta).

Behaves as the service does where a client can tell: `setup` first and `setupComplete`; every
client message validated (`validation.py`) and a refusal closed with the service's code and
reason; binary JSON server frames; server VAD on the audio it receives (silence ends a turn,
speech during the model's audible turn interrupts it, with `late_chunks` stale chunks still
going out after `interrupted`); fragmentary input and output transcriptions; tool calls,
their responses by id and their cancellation on barge-in; resumption handles, `goAway` and
resumption onto a new connection (refused with 1011 while the old one is open).

Faults on demand: `reject_connections` (HTTP 503: unreachable), `quota_exhausted` (HTTP 429),
a wrong key (close 1007 after setup), `drop()` (close 1011), `go_away()`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from aiohttp import WSMsgType, web

from caller_engine.sim.gemini.generate import GenerateContentEmulator
from caller_engine.sim.gemini.script import RATE, GeminiResponse, GeminiScript
from caller_engine.sim.gemini.validation import Refusal, check_message
from caller_engine.sim.openai.realtime.script import RealtimeScript

RETIRED = ("gemini-live-2.5-flash-preview", "gemini-2.0-flash-live-001")
DEFAULT_VAD_THRESHOLD = 400.0
ScriptFactory = Callable[[], GeminiScript | RealtimeScript]


class Conversation:
    """What survives a connection: the script, the history and pending tool calls."""

    def __init__(self, script: GeminiScript) -> None:
        self.script = script
        self.history: list[dict[str, Any]] = []
        self.pending: dict[str, str] = {}  # call id -> name
        self.handle = ""
        self.connection: GeminiConnection | None = None


class GeminiConnection:
    def __init__(self, emulator: GeminiLiveEmulator, ws: web.WebSocketResponse, key: str) -> None:
        self.emulator = emulator
        self.ws = ws
        self.key = key
        self.setup: dict[str, Any] | None = None
        self.conversation: Conversation | None = None
        self.received: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.input_pcm = bytearray()
        self.input_rate = 16000
        self.prompts: list[str] = []
        self.tool_outputs: dict[str, dict[str, Any]] = {}
        self.violations: list[str] = []
        self.closed = asyncio.Event()
        self.resumed = False
        self._lock = asyncio.Lock()
        self._response: asyncio.Task[None] | None = None
        self._audible_until = 0.0
        self._remaining: list[bytes] = []
        self._speaking = False
        self._silence_ms = 0.0
        self._silence_needed = 500.0
        self._bundled = True

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    # -- sending -------------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> bool:
        async with self._lock:
            if self.ws.closed:
                return False
            try:
                await self.ws.send_bytes(orjson.dumps(message))
            except (ConnectionError, RuntimeError):
                return False
            if "modelTurn" not in message.get("serverContent", {}):
                self.sent.append(message)
            return True

    async def refuse(self, refusal: Refusal, *, violation: bool = True) -> None:
        if violation:
            self.violations.append(f"{refusal.code} {refusal.reason}")
        await self.close(refusal.code, refusal.reason)

    async def close(self, code: int, reason: str) -> None:
        self._cancel_response()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close(code=code, message=reason.encode()[:123])

    async def drop(self, code: int = 1011) -> None:
        """Close unannounced, as the service does on an internal error."""
        await self.close(code, "Internal error occurred.")

    async def go_away(self, time_left: float = 1.0) -> None:
        """Announce the end of this connection, then close it when the time is up."""
        await self.send({"goAway": {"timeLeft": f"{time_left:g}s"}})

        async def deadline() -> None:
            await asyncio.sleep(time_left)
            await self.close(1011, "Deadline expired before operation could complete.")

        self.emulator.background(deadline())

    # -- the connection ------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.BINARY:
                    raw: str | bytes = msg.data
                elif msg.type == WSMsgType.TEXT:
                    raw = msg.data
                else:
                    break
                try:
                    message = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    await self.refuse(Refusal(1007, "Invalid JSON payload received."))
                    break
                refusal = check_message(message, setup_done=self.setup is not None)
                if refusal is not None:
                    await self.refuse(refusal)
                    break
                if not await self._handle(message):
                    break
        finally:
            self._cancel_response()
            conversation = self.conversation
            if conversation is not None and conversation.connection is self:
                conversation.connection = None
            self.closed.set()

    async def _handle(self, message: dict[str, Any]) -> bool:
        if "setup" in message:
            return await self._on_setup(message["setup"])
        if "realtimeInput" not in message or "audio" not in message["realtimeInput"]:
            self.received.append(message)
        if "realtimeInput" in message:
            await self._on_realtime(message["realtimeInput"])
        elif "clientContent" in message:
            await self._on_client_content(message["clientContent"])
        elif "toolResponse" in message:
            await self._on_tool_response(message["toolResponse"])
        return True

    async def _on_setup(self, setup: dict[str, Any]) -> bool:
        self.received.append({"setup": setup})
        emulator = self.emulator
        if self.key != emulator.api_key:
            await self.refuse(
                Refusal(1007, "API key not valid. Please pass a valid API key."), violation=False
            )
            return False
        model = str(setup.get("model", ""))
        name = model.removeprefix("models/")
        if not model.startswith("models/gemini-") or name in RETIRED:
            reason = (
                f"{model} is not found for API version v1beta, or is not supported for "
                "bidiGenerateContent."
            )
            await self.refuse(Refusal(1008, reason), violation=False)
            return False
        self._bundled = not name.startswith(("gemini-2.5", "gemini-live-2.5"))
        vad = (setup.get("realtimeInputConfig") or {}).get("automaticActivityDetection") or {}
        self._silence_needed = float(vad.get("silenceDurationMs", 500))
        resumption = setup.get("sessionResumption")
        handle = (resumption or {}).get("handle")
        if handle:
            conversation = emulator.conversations.get(handle)
            if conversation is None:
                await self.refuse(Refusal(1008, "BidiGenerateContent session not found"))
                return False
            old = conversation.connection
            if old is not None and not old.ws.closed:
                await self.refuse(Refusal(1011, "Internal error encountered."), violation=False)
                return False
            self.resumed = True
        else:
            factory = emulator.script_factory
            script = factory() if factory is not None else GeminiScript()
            if isinstance(script, RealtimeScript):
                script = GeminiScript.from_realtime(script)
            conversation = Conversation(script)
        conversation.connection = self
        self.conversation = conversation
        self.setup = setup
        await self.send({"setupComplete": {}})
        if resumption is not None:
            await self._new_handle()
        return True

    async def _new_handle(self) -> None:
        assert self.conversation is not None
        if not self.emulator.issue_handles:
            return
        handle = uuid.uuid4().hex[:36].ljust(36, "0")
        self.conversation.handle = handle
        self.emulator.conversations[handle] = self.conversation
        await self.send({"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}})

    # -- input ---------------------------------------------------------------------------

    async def _on_realtime(self, body: dict[str, Any]) -> None:
        if "audio" in body:
            audio = body["audio"]
            mime = str(audio.get("mimeType", ""))
            if not mime.startswith("audio/pcm"):
                await self.refuse(Refusal(1007, "Unsupported MIME type: " + mime))
                return
            if "rate=" in mime:
                self.input_rate = int(mime.rsplit("rate=", 1)[1])
            pcm = base64.b64decode(audio.get("data", ""))
            self.input_pcm += pcm
            await self._vad(pcm)
        elif "text" in body:
            self.prompts.append(str(body["text"]))
            await self._interrupt()
            self._respond()

    async def _vad(self, pcm: bytes) -> None:
        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
        if not len(samples):
            return
        ms = len(samples) * 1000 / self.input_rate
        loud = float(np.mean(np.abs(samples.astype(np.int32)))) > self.emulator.vad_threshold
        if loud:
            self._silence_ms = 0.0
            if not self._speaking:
                self._speaking = True
                await self._interrupt()
        elif self._speaking:
            self._silence_ms += ms
            if self._silence_ms >= self._silence_needed:
                self._speaking = False
                await self._user_turn_ended()

    async def _user_turn_ended(self) -> None:
        assert self.conversation is not None
        text = self.conversation.script.next_transcript()
        words = text.split(" ")
        for index in range(0, len(words), 2):
            fragment = " " + " ".join(words[index : index + 2])
            await self.send({"serverContent": {"inputTranscription": {"text": fragment}}})
        self.conversation.history.append({"role": "user", "text": text})
        if not self.conversation.pending:
            self._respond()

    async def _on_client_content(self, body: dict[str, Any]) -> None:
        assert self.conversation is not None
        for turn in body.get("turns") or ():
            for part in turn.get("parts") or ():
                if "text" in part:
                    self.conversation.history.append(
                        {"role": turn.get("role"), "text": part["text"]}
                    )
                    if turn.get("role") == "user":
                        self.prompts.append(str(part["text"]))
        if body.get("turnComplete"):
            await self._interrupt()
            self._respond()

    async def _on_tool_response(self, body: dict[str, Any]) -> None:
        assert self.conversation is not None
        conversation = self.conversation
        for response in body.get("functionResponses") or ():
            call_id = str(response["id"])
            name = conversation.pending.pop(call_id, None)
            if name is None:
                self.violations.append(f"toolResponse for unknown or cancelled call {call_id}")
                continue
            self.tool_outputs[name] = dict(response["response"])
            self.emulator.tool_outputs.append((name, dict(response["response"])))
        if not conversation.pending and not self._responding:
            self._respond()

    # -- output --------------------------------------------------------------------------

    @property
    def _responding(self) -> bool:
        return self._response is not None and not self._response.done()

    def _respond(self) -> None:
        if self._responding or self.ws.closed:
            return
        assert self.conversation is not None
        response = self.conversation.script.next_response()
        self._response = asyncio.create_task(self._stream(response))

    def _cancel_response(self) -> None:
        if self._response is not None and not self._response.done():
            self._response.cancel()

    async def _stream(self, response: GeminiResponse) -> None:
        assert self.conversation is not None
        emulator = self.emulator
        step = RATE * 2 * emulator.chunk_ms // 1000
        chunks = [response.pcm[i : i + step] for i in range(0, len(response.pcm), step)]
        words = response.text.split(" ") if response.text else []
        per_chunk = max(1, -(-len(words) // max(1, len(chunks))))
        fragments = [" ".join(words[i : i + per_chunk]) for i in range(0, len(words), per_chunk)]
        self._remaining = list(chunks)
        start = max(self.loop.time(), self._audible_until)
        self._audible_until = start + len(response.pcm) / (RATE * 2)
        for index in itertools.count():
            if index >= len(chunks) and index >= len(fragments):
                break
            content: dict[str, Any] = {}
            if index < len(chunks):
                self._remaining.pop(0)
                data = base64.b64encode(chunks[index]).decode()
                content["modelTurn"] = {
                    "parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": data}}]
                }
            fragment = fragments[index] if index < len(fragments) else ""
            if fragment:
                said = {"outputTranscription": {"text": (" " if index else "") + fragment}}
                if self._bundled:
                    content.update(said)
                else:
                    await self.send({"serverContent": said})
            if content:
                await self.send({"serverContent": content})
            await asyncio.sleep(emulator.delta_interval)
        self.conversation.history.append({"role": "model", "text": response.text})
        if response.tool_calls:
            calls = []
            for name, args in response.tool_calls:
                call_id = f"function-call-{uuid.uuid4().int % 10**19}"
                self.conversation.pending[call_id] = name
                calls.append({"id": call_id, "name": name, "args": args})
            await self.send({"toolCall": {"functionCalls": calls}})
        await self.send({"serverContent": {"generationComplete": True}})
        await self.send(
            {
                "serverContent": {"turnComplete": True},
                "usageMetadata": {"promptTokenCount": 100, "totalTokenCount": 120},
            }
        )
        if not self.conversation.pending:
            await self._new_handle()

    async def _interrupt(self) -> None:
        """The caller spoke (or the client sent a turn): cut the model's audible turn."""
        assert self.conversation is not None
        generating = self._responding
        audible = self.loop.time() < self._audible_until
        if not generating and not audible:
            return
        self._cancel_response()
        self._audible_until = self.loop.time()
        await self.send({"serverContent": {"interrupted": True}})
        if generating:
            for chunk in self._remaining[: self.emulator.late_chunks]:
                data = base64.b64encode(chunk).decode()
                await self.send(
                    {
                        "serverContent": {
                            "modelTurn": {
                                "parts": [
                                    {
                                        "inlineData": {
                                            "mimeType": "audio/pcm;rate=24000",
                                            "data": data,
                                        }
                                    }
                                ]
                            }
                        }
                    }
                )
            await self.send({"serverContent": {"turnComplete": True}})
        self._remaining = []
        pending = self.conversation.pending
        if pending:
            await self.send({"toolCallCancellation": {"ids": list(pending)}})
            pending.clear()


class GeminiLiveEmulator:
    def __init__(
        self,
        *,
        api_key: str = "gemini-test-key",
        script_factory: ScriptFactory | None = None,
        chunk_ms: int = 100,
        delta_interval: float = 0.0,
        late_chunks: int = 0,
        vad_threshold: float = DEFAULT_VAD_THRESHOLD,
    ) -> None:
        self.api_key = api_key
        # The same host answers generateContent (summaries), as the service does.
        self.generate = GenerateContentEmulator(api_key)
        self.script_factory = script_factory
        self.chunk_ms = chunk_ms
        self.delta_interval = delta_interval
        self.late_chunks = late_chunks
        self.vad_threshold = vad_threshold
        self.sessions: list[GeminiConnection] = []
        self.conversations: dict[str, Conversation] = {}
        self.tool_outputs: list[tuple[str, dict[str, Any]]] = []
        self.connection_attempts = 0
        self.issue_handles = True  # False: no sessionResumptionUpdate (nothing resumable yet)
        self.reject_connections = 0
        self.quota_exhausted = 0
        self._added = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def violations(self) -> list[str]:
        return [v for s in self.sessions for v in s.violations]

    def background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def app(self) -> web.Application:
        app = web.Application()
        self.generate.add_routes(app)
        app.router.add_get("/{path:.*}", self._handle)
        app.on_shutdown.append(self._close_all)
        return app

    async def _close_all(self, _app: web.Application) -> None:
        for task in list(self._tasks):
            task.cancel()
        for session in self.sessions:
            if not session.closed.is_set():
                await session.close(1001, "going away")

    async def wait_for_session(self, index: int = 0, within: float = 5.0) -> GeminiConnection:
        async with asyncio.timeout(within):
            while len(self.sessions) <= index:
                signal = self._added
                await signal.wait()
        return self.sessions[index]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not request.path.endswith("BidiGenerateContent"):
            return web.json_response({"error": {"code": 404, "status": "NOT_FOUND"}}, status=404)
        self.connection_attempts += 1
        if self.reject_connections:
            self.reject_connections -= 1
            return web.json_response({"error": {"code": 503, "status": "UNAVAILABLE"}}, status=503)
        if self.quota_exhausted:
            self.quota_exhausted -= 1
            body = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}
            return web.json_response(body, status=429)
        key = request.headers.get("x-goog-api-key") or request.query.get("key", "")
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        session = GeminiConnection(self, ws, key)
        self.sessions.append(session)
        self._added.set()
        self._added = asyncio.Event()
        await session.run()
        return ws
