"""One emulated Nova Sonic conversation: input event order, turns, replies, tools, barge-in.

Input order: `sessionStart`, `promptStart`, a SYSTEM text content, optional history (USER
first), then one interactive AUDIO content that stays open; interactive USER text and TOOL
result contents may come while it is open; then the audio `contentEnd`, `promptEnd` and
`sessionEnd`. A reply starts at the end of a caller's turn (energy VAD, its silence set by
the endpointing sensitivity) or of an interactive USER text. It is `completionStart`, the
caller's transcript as USER FINAL text, ASSISTANT SPECULATIVE text, AUDIO faster than real
time, ASSISTANT FINAL text, any `toolUse` (the reply waits for its result), `usageEvent`
and `completionEnd`. Caller speech while the reply's audio would still be playing at real
time is a barge-in: while audio is still being generated it stops, the FINAL text carries
what was generated, then `{ "interrupted" : true }` and stop reason INTERRUPTED; after that,
an ASSISTANT text block with just the interrupted marker reports it (the completion stays
open while the audio plays).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from caller_engine.audio import mulaw
from caller_engine.sim.nova_sonic import validation
from caller_engine.sim.nova_sonic.validation import Invalid
from caller_engine.sim.openai.realtime.script import RealtimeScript, ScriptedResponse
from caller_engine.sim.openai.realtime.vad import VadSettings, VoiceActivityDetector, pcm16_energy

if TYPE_CHECKING:
    from caller_engine.sim.nova_sonic.server import NovaSonicEmulator

INTERRUPTED_TEXT = '{ "interrupted" : true }'
ENDPOINTING_MS = {"HIGH": 1500, "MEDIUM": 1750, "LOW": 2000}
NOVA_2_MODELS = ("amazon.nova-2-sonic-v1:0", "amazon.nova-2-5-sonic")


@dataclass
class _Content:
    name: str
    kind: str
    role: str
    interactive: bool
    tool_use_id: str = ""
    text: list[str] = field(default_factory=list)


@dataclass
class _Turn:
    user_text: str
    from_audio: bool


class SessionFailure(Exception):
    def __init__(self, exception_type: str, message: str) -> None:
        super().__init__(message)
        self.exception_type = exception_type
        self.message = message


class EmulatedNovaSession:
    def __init__(
        self,
        emulator: NovaSonicEmulator,
        model_id: str,
        send: Callable[[dict[str, Any]], None],
        fail: Callable[[str, str], None],
    ) -> None:
        self.emulator = emulator
        self.model_id = model_id
        self._send = send
        self._fail = fail
        self.session_id = str(uuid.uuid4())
        self.script: RealtimeScript = (
            emulator.script_factory() if emulator.script_factory else RealtimeScript()
        )
        self.received: list[dict[str, Any]] = []  # every input event (audio content elided)
        self.sent: list[dict[str, Any]] = []  # every output event (audio content elided)
        self.input_audio = bytearray()  # caller PCM16 as received
        self.audio_first_at: float | None = None  # loop time of the first and latest audio
        self.audio_last_at: float | None = None
        self.output_audio = bytearray()  # model PCM16 as sent
        self.transcript: list[tuple[str, str]] = []  # (USER|ASSISTANT, final text)
        self.tools: dict[str, dict[str, Any]] = {}
        self.system_prompt = ""
        self.history: list[tuple[str, str]] = []
        self.state = "new"  # new, session, prompt, prompt_ended, ended
        self.prompt_name = ""
        self.output_rate = 8000
        self.input_rate = 8000
        self.voice = ""
        self.barge_ins = 0
        self.tool_results: dict[str, str] = {}
        self.ended_cleanly = False
        self.prompts: list[str] = []  # interactive USER texts (what asked the model to speak)
        self.tool_uses: dict[str, str] = {}  # toolUseId → tool name
        self.closed = asyncio.Event()  # the stream is over (ended, reset or dropped)
        self._contents: dict[str, _Content] = {}
        self._used_names: set[str] = set()
        self._audio_content: str | None = None
        self._audio_seen = False
        self._pending_tools: dict[str, asyncio.Future[str]] = {}
        self._turns: asyncio.Queue[_Turn] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._speaking_until = 0.0  # loop time the current reply's audio finishes playing
        self._replying = False
        self._barged_in = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._endpointing_ms = ENDPOINTING_MS["MEDIUM"]
        self.vad = VoiceActivityDetector(
            VadSettings(emulator.vad_energy_threshold, 0, self._endpointing_ms),
            frame_bytes=320,
            energy=pcm16_energy,
        )

    # -- input -----------------------------------------------------------------------------

    def handle(self, event: Any) -> None:
        """One input event; raises SessionFailure for what the service refuses."""
        try:
            name, body = self._unwrap(event)
            self._record(name, body)
            handler = getattr(self, f"_on_{name}", None)
            if handler is None:
                raise Invalid(f"Unknown event type {name!r}")
            handler(body)
        except Invalid as exc:
            raise SessionFailure("validationException", str(exc)) from exc

    def _unwrap(self, event: Any) -> tuple[str, dict[str, Any]]:
        if not isinstance(event, dict) or set(event) != {"event"}:
            raise Invalid('Invalid input request: expected {"event": {...}}')
        inner = event["event"]
        if not isinstance(inner, dict) or len(inner) != 1:
            raise Invalid("Invalid input request: an event has exactly one type")
        ((name, body),) = inner.items()
        if not isinstance(body, dict):
            raise Invalid(f"{name} must be an object")
        return name, body

    def _record(self, name: str, body: dict[str, Any]) -> None:
        if name == "audioInput":
            body = {**body, "content": f"<{len(body.get('content', ''))} base64 chars>"}
        self.received.append({name: body})

    def _expect(self, *states: str) -> None:
        if self.state not in states:
            raise Invalid(f"Invalid input request: event out of order (state {self.state})")

    def _check_prompt(self, body: dict[str, Any]) -> None:
        if body.get("promptName") != self.prompt_name:
            raise Invalid(f"Unknown promptName {body.get('promptName')!r}")

    def _on_sessionStart(self, body: dict[str, Any]) -> None:
        self._expect("new")
        validation.session_start(body, nested_turn_detection=self.model_id in NOVA_2_MODELS)
        sensitivity = body.get("turnDetectionConfiguration", {}).get(
            "endpointingSensitivity", body.get("endpointingSensitivity", "MEDIUM")
        )
        self._endpointing_ms = self.emulator.endpointing_ms or ENDPOINTING_MS[sensitivity]
        self.vad.settings = VadSettings(self.emulator.vad_energy_threshold, 0, self._endpointing_ms)
        self.state = "session"

    def _on_promptStart(self, body: dict[str, Any]) -> None:
        self._expect("session")
        self.tools = validation.prompt_start(body)
        self.prompt_name = body["promptName"]
        audio = body["audioOutputConfiguration"]
        self.output_rate = audio["sampleRateHertz"]
        self.voice = audio.get("voiceId", "matthew")
        self.state = "prompt"
        self._worker = asyncio.create_task(self._work())

    def _on_contentStart(self, body: dict[str, Any]) -> None:
        self._expect("prompt")
        validation.content_start(body)
        self._check_prompt(body)
        name, kind, role = body["contentName"], body["type"], body["role"]
        interactive = bool(body.get("interactive", False))
        if name in self._used_names:
            raise Invalid(f"contentName {name!r} was already used")
        if kind != "AUDIO" and any(c.kind != "AUDIO" for c in self._contents.values()):
            raise Invalid("Another TEXT or TOOL content is still open")
        if not self._used_names and not (kind == "TEXT" and role == "SYSTEM"):
            raise Invalid("The first content must be the SYSTEM text")
        tool_use_id = ""
        if kind == "TEXT" and not interactive and role in ("USER", "ASSISTANT"):
            if self._audio_seen:
                raise Invalid("Conversation history must come before the audio content")
            if not self.history and role != "USER":
                raise Invalid("Conversation history must start with a USER message")
        elif kind == "TEXT" and role == "SYSTEM" and self._used_names:
            raise Invalid("Only one SYSTEM content is allowed, before any other")
        elif kind == "TEXT" and interactive and role != "USER":
            raise Invalid("Interactive text must have role USER")
        elif kind == "AUDIO":
            if self._audio_seen:
                raise Invalid("Only one audio content is allowed per prompt")
            self._audio_seen = True
            self._audio_content = name
            self.input_rate = body["audioInputConfiguration"]["sampleRateHertz"]
            self.vad.frame_bytes = self.input_rate // 50 * 2
        elif kind == "TOOL":
            tool_use_id = body["toolResultInputConfiguration"]["toolUseId"]
            if tool_use_id not in self._pending_tools:
                raise Invalid(f"No pending toolUse with toolUseId {tool_use_id!r}")
        self._used_names.add(name)
        self._contents[name] = _Content(name, kind, role, interactive, tool_use_id)

    def _open(self, body: dict[str, Any], kind: str, event: str) -> _Content:
        self._expect("prompt")
        self._check_prompt(body)
        content = self._contents.get(body["contentName"])
        if content is None:
            raise Invalid(f"{event}: content {body['contentName']!r} is not open")
        if content.kind != kind:
            raise Invalid(f"{event} in a {content.kind} content")
        return content

    def _on_textInput(self, body: dict[str, Any]) -> None:
        validation.content_event("textInput", body)
        self._open(body, "TEXT", "textInput").text.append(body["content"])

    def _on_toolResult(self, body: dict[str, Any]) -> None:
        validation.content_event("toolResult", body)
        self._open(body, "TOOL", "toolResult").text.append(body["content"])

    def _on_audioInput(self, body: dict[str, Any]) -> None:
        validation.content_event("audioInput", body)
        self._open(body, "AUDIO", "audioInput")
        try:
            pcm = base64.b64decode(body["content"], validate=True)
        except binascii.Error as exc:
            raise Invalid("audioInput.content is not valid base64") from exc
        if len(pcm) % 2:
            raise Invalid("audioInput.content is not whole 16-bit samples")
        self.input_audio += pcm
        self.audio_last_at = self._loop.time()
        if self.audio_first_at is None:
            self.audio_first_at = self.audio_last_at
        for vad_event in self.vad.feed(pcm):
            if vad_event.kind == "started":
                if self._replying and self._loop.time() < self._speaking_until:
                    self._barged_in.set()
            else:
                transcript = self.script.next_transcript()
                self._turns.put_nowait(_Turn(transcript, from_audio=True))

    def _on_contentEnd(self, body: dict[str, Any]) -> None:
        validation.content_event("contentEnd", body)
        self._expect("prompt")
        self._check_prompt(body)
        content = self._contents.pop(body["contentName"], None)
        if content is None:
            raise Invalid(f"contentEnd: content {body['contentName']!r} is not open")
        text = "".join(content.text)
        if content.kind == "AUDIO":
            self._audio_content = None
        elif content.kind == "TOOL":
            self.tool_results[content.tool_use_id] = text
            future = self._pending_tools.pop(content.tool_use_id)
            if not future.done():
                future.set_result(text)
        elif content.role in ("SYSTEM", "SYSTEM_SPEECH"):
            self.system_prompt = text
        elif content.interactive:
            self.prompts.append(text)
            self._turns.put_nowait(_Turn(text, from_audio=False))
        else:
            self.history.append((content.role, text))

    def _on_promptEnd(self, body: dict[str, Any]) -> None:
        self._expect("prompt")
        validation._object(body, "promptEnd", {"promptName"}, {"promptName"})
        self._check_prompt(body)
        if self._contents:
            raise Invalid("promptEnd while contents are open: " + ", ".join(self._contents))
        self.state = "prompt_ended"

    def _on_sessionEnd(self, body: dict[str, Any]) -> None:
        self._expect("prompt_ended", "session")
        validation._object(body, "sessionEnd", set(), set())
        self.state = "ended"
        self.ended_cleanly = True
        self.stop()

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        for future in self._pending_tools.values():
            future.cancel()

    # -- output ----------------------------------------------------------------------------

    def _emit(self, name: str, body: dict[str, Any]) -> None:
        event = {
            "event": {name: {"sessionId": self.session_id, "promptName": self.prompt_name, **body}}
        }
        if name == "audioOutput":
            self.sent.append({name: {**body, "content": "<audio>"}})
        else:
            self.sent.append({name: event["event"][name]})
        self._send(event)

    def _text_block(
        self, completion: str, role: str, stage: str, text: str, stop: str, interrupted: bool
    ) -> None:
        content_id = str(uuid.uuid4())
        base = {"completionId": completion, "contentId": content_id}
        self._emit(
            "contentStart",
            {
                **base,
                "type": "TEXT",
                "role": role,
                "textOutputConfiguration": {"mediaType": "text/plain"},
                "additionalModelFields": json.dumps({"generationStage": stage}),
            },
        )
        if text:
            self._emit("textOutput", {**base, "role": role, "content": text})
        if interrupted:
            self._emit("textOutput", {**base, "role": role, "content": INTERRUPTED_TEXT})
        self._emit("contentEnd", {**base, "type": "TEXT", "stopReason": stop})

    def _pcm_for(self, response: ScriptedResponse) -> bytes:
        ulaw = response.audio if response.audio is not None else mulaw.tone(response.audio_ms)
        pcm = mulaw.decode_to_bytes(ulaw)
        factor = self.output_rate // 8000
        if factor == 1:
            return pcm
        view = memoryview(pcm)
        return b"".join(bytes(view[i : i + 2]) * factor for i in range(0, len(pcm), 2))

    async def _work(self) -> None:
        while True:
            turn = await self._turns.get()
            self._replying = True
            try:
                await self._reply(turn)
            finally:
                self._replying = False

    async def _reply(self, turn: _Turn) -> None:
        completion = str(uuid.uuid4())
        self._barged_in.clear()
        self._emit("completionStart", {"completionId": completion})
        if turn.from_audio and turn.user_text:
            self._text_block(completion, "USER", "FINAL", turn.user_text, "END_TURN", False)
        if turn.user_text:
            self.transcript.append(("USER", turn.user_text))
        response = self.script.next_response()
        output_ms = 0
        interrupted = False
        while True:
            if response.has_message:
                heard, ms, interrupted = await self._speak(completion, response)
                output_ms += ms
                if heard:
                    self.transcript.append(("ASSISTANT", heard))
            if interrupted or not response.tool_calls:
                break
            await asyncio.gather(
                *(self._use_tool(completion, name, args) for name, args in response.tool_calls)
            )
            response = self.script.next_response()
        if not interrupted:
            interrupted = await self._playback(completion)
        words = len(turn.user_text.split())
        self._emit(
            "usageEvent",
            {
                "completionId": completion,
                "details": {
                    "delta": {
                        "input": {"speechTokens": words * 2, "textTokens": 0},
                        "output": {"speechTokens": output_ms // 40, "textTokens": 0},
                    }
                },
                "totalInputTokens": words * 2,
                "totalOutputTokens": output_ms // 40,
                "totalTokens": words * 2 + output_ms // 40,
            },
        )
        stop = "INTERRUPTED" if interrupted else "END_TURN"
        self._emit("completionEnd", {"completionId": completion, "stopReason": stop})

    async def _speak(self, completion: str, response: ScriptedResponse) -> tuple[str, int, bool]:
        """SPECULATIVE text, the audio, FINAL text: (what was heard, ms sent, interrupted)."""
        emulator = self.emulator
        if not response.text and response.audio == b"":
            return "", 0, False  # a turn that says nothing (e.g. after a hang-up tool)
        self._text_block(
            completion, "ASSISTANT", "SPECULATIVE", response.text, "PARTIAL_TURN", False
        )
        pcm = self._pcm_for(response)
        bytes_per_ms = self.output_rate // 1000 * 2
        total_ms = len(pcm) // bytes_per_ms
        audio_id = str(uuid.uuid4())
        base = {"completionId": completion, "contentId": audio_id}
        self._emit(
            "contentStart",
            {
                **base,
                "type": "AUDIO",
                "role": "ASSISTANT",
                "audioOutputConfiguration": {
                    "mediaType": "audio/lpcm",
                    "sampleRateHertz": self.output_rate,
                    "sampleSizeBits": 16,
                    "channelCount": 1,
                    "encoding": "base64",
                },
            },
        )
        start = self._loop.time()
        self._speaking_until = start + total_ms / 1000 / emulator.playback_speed
        chunk = emulator.chunk_ms * bytes_per_ms
        sent = 0
        interrupted = False
        for offset in range(0, len(pcm), chunk):
            if self._barged_in.is_set():
                interrupted = True
                break
            piece = pcm[offset : offset + chunk]
            self.output_audio += piece
            sent += len(piece)
            self._emit("audioOutput", {**base, "content": base64.b64encode(piece).decode()})
            await asyncio.sleep(
                emulator.chunk_ms / 1000 / emulator.speedup if emulator.speedup else 0
            )
        if interrupted:
            # Barge-in while audio is still being generated: the FINAL text (of what was
            # generated) ends first, a few chunks may still follow, then the audio ends.
            heard = self._heard(response.text, sent / max(1, len(pcm)))
            self._text_block(completion, "ASSISTANT", "FINAL", heard, "INTERRUPTED", True)
            for offset in range(sent, min(len(pcm), sent + emulator.late_chunks * chunk), chunk):
                piece = pcm[offset : offset + chunk]
                self.output_audio += piece
                self._emit("audioOutput", {**base, "content": base64.b64encode(piece).decode()})
            self._emit("contentEnd", {**base, "type": "AUDIO", "stopReason": "END_TURN"})
            self.barge_ins += 1
            self._speaking_until = 0.0
            return heard, sent // bytes_per_ms, True
        self._emit("contentEnd", {**base, "type": "AUDIO", "stopReason": "END_TURN"})
        self._text_block(completion, "ASSISTANT", "FINAL", response.text, "END_TURN", False)
        return response.text, total_ms, False

    async def _playback(self, completion: str) -> bool:
        """Wait while the reply's audio would still be playing; True on a barge-in, which
        is reported with an interrupted text block."""
        remaining = self._speaking_until - self._loop.time()
        interrupted = False
        if remaining > 0:
            try:
                await asyncio.wait_for(self._barged_in.wait(), remaining)
                interrupted = True
            except TimeoutError:
                pass
        self._speaking_until = 0.0
        if interrupted:
            self.barge_ins += 1
            self._text_block(completion, "ASSISTANT", "FINAL", "", "INTERRUPTED", True)
        return interrupted

    @staticmethod
    def _heard(text: str, share: float) -> str:
        """The words of `text` covered by the `share` of its audio that was generated."""
        words = text.split()
        return " ".join(words[: round(len(words) * min(1.0, share))])

    async def _use_tool(self, completion: str, name: str, arguments: dict[str, Any]) -> str:
        tool_use_id = str(uuid.uuid4())
        future: asyncio.Future[str] = self._loop.create_future()
        self._pending_tools[tool_use_id] = future
        self.tool_uses[tool_use_id] = name
        base = {"completionId": completion, "contentId": str(uuid.uuid4())}
        self._emit(
            "contentStart",
            {
                **base,
                "type": "TOOL",
                "role": "TOOL",
                "toolUseOutputConfiguration": {"mediaType": "application/json"},
            },
        )
        self._emit(
            "toolUse",
            {
                **base,
                "toolName": name,
                "toolUseId": tool_use_id,
                "content": json.dumps(arguments),
            },
        )
        self._emit("contentEnd", {**base, "type": "TOOL", "stopReason": "TOOL_USE"})
        return await future
