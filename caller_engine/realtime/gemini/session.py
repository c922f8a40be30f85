"""Gemini Live (BidiGenerateContent) over a directly opened WebSocket.

Server-driven: the model answers after caller speech and after tool results by itself, detects
barge-in and reports it (`interrupted`). Caller audio is converted μ-law 8 kHz → PCM16 at the
configured input rate, model audio PCM16 24 kHz → μ-law 8 kHz, with per-call resampler state.

A connection lasts about ten minutes. On `goAway`, or when the connection drops, the session
moves to a new connection with the latest resumption handle (the old one closed first): caller
audio is held in a bounded buffer meanwhile, and control messages (tool responses above all)
are queued and sent once the new connection is set up. The bridge sees one session throughout.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import orjson
from loguru import logger
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import State

from caller_engine.audio.convert import CallerToPcm, PcmToCaller
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
    ToolCallsCancelled,
    UserItem,
    UserTranscript,
)
from caller_engine.realtime.gemini import wire
from caller_engine.realtime.gemini.profiles import ModelProfile, profile_for
from caller_engine.realtime.proxy import model_proxy
from caller_engine.realtime.wsframe import MaskKeys, masked_text_frame

OUTPUT_RATE = 24000
MAX_UNSENT_BYTES = 128 * 1024
HELD_FRAMES = 500  # caller audio kept while switching connections: 10 s of 20 ms frames
RESUME_DELAYS = (0.0, 0.5, 1.0)
SETUP_TIMEOUT = 5.0


class _Turn:
    __slots__ = ("cut", "id", "item", "text")

    def __init__(self, response_id: str) -> None:
        self.id = response_id
        self.item = f"{response_id}-a"
        self.text = ""
        self.cut = False


class GeminiLiveConnector:
    def __init__(
        self,
        url: str,
        model: str,
        api_key: str,
        *,
        input_rate: int = 16000,
        open_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.model = model
        self.headers = {"x-goog-api-key": api_key}
        self.input_rate = input_rate
        self.open_timeout = open_timeout
        self.profile = profile_for(model)

    async def open(self, config: SessionConfig, handle: str | None) -> ClientConnection:
        """Open a connection, send `setup`, wait for `setupComplete`; raise ConnectError."""
        try:
            ws = await connect(
                self.url,
                proxy=model_proxy(self.url),
                additional_headers=self.headers,
                open_timeout=self.open_timeout,
                close_timeout=1.0,
                compression=None,
                max_size=None,
                ping_interval=None,  # the service's pongs can lag by many seconds
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status == 429:
                raise ConnectError("Gemini quota exhausted (HTTP 429)", fatal=False) from exc
            fatal = status in (400, 401, 403, 404)
            raise ConnectError(
                f"Gemini refused the connection: HTTP {status}", fatal=fatal
            ) from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ConnectError(f"Gemini unreachable: {exc!r}", fatal=False) from exc
        setup = wire.setup_message(config, self.model, self.profile, handle=handle)
        try:
            await ws.send(orjson.dumps(setup).decode())
            async with asyncio.timeout(SETUP_TIMEOUT):
                raw = await ws.recv()
        except ConnectionClosed as exc:
            raise _refusal(exc) from exc
        except TimeoutError as exc:
            await ws.close()
            raise ConnectError("Gemini setup timed out", fatal=False) from exc
        if "setupComplete" not in orjson.loads(raw):
            await ws.close()
            raise ConnectError("Gemini did not confirm the setup", fatal=True)
        return ws

    async def connect(self, config: SessionConfig) -> GeminiLiveSession:
        ws = await self.open(config, None)
        return GeminiLiveSession(self, config, ws)


def _refusal(exc: ConnectionClosed) -> ConnectError:
    frame = exc.rcvd
    if frame is None:
        return ConnectError("Gemini closed the connection during setup", fatal=False)
    quota = any(m in frame.reason for m in wire.QUOTA_MARKERS)
    fatal = frame.code in wire.REFUSED and not quota
    return ConnectError(f"Gemini closed the setup: {frame.code} {frame.reason}", fatal=fatal)


class GeminiLiveSession:
    def __init__(
        self, connector: GeminiLiveConnector, config: SessionConfig, ws: ClientConnection
    ) -> None:
        self.connector = connector
        self.config = config
        self.profile: ModelProfile = connector.profile
        self._audio_prefix = (
            b'{"realtimeInput":{"audio":{"mimeType":"audio/pcm;rate=%d","data":"'
            % connector.input_rate
        )
        self._inbound = CallerToPcm(connector.input_rate)
        self._outbound = PcmToCaller(OUTPUT_RATE)
        self._keys = MaskKeys()
        self._attach(ws)
        self._handle: str | None = None
        self._switching = False
        self._closing = False
        self._held: deque[str] = deque(maxlen=HELD_FRAMES)
        self._queued: list[dict[str, Any]] = []
        self._since_handle: list[dict[str, Any]] = []  # tool responses the handle lacks
        self._call_names: dict[str, str] = {}
        self._turn: _Turn | None = None
        self._last_turn: _Turn | None = None
        self._turns = 0
        self._user_item: str | None = None
        self._user_text = ""
        self._users = 0
        self.resumptions = 0

    def _attach(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._protocol = ws.protocol
        self._transport = ws.transport

    @property
    def capabilities(self) -> Capabilities:
        return SERVER_DRIVEN

    # -- client → server -----------------------------------------------------------------

    def send_audio(self, payload_b64: str) -> bool:
        if self._switching:
            self._held.append(payload_b64)
            return True
        transport = self._transport
        if (
            self._protocol.state is not State.OPEN
            or transport.is_closing()
            or transport.get_write_buffer_size() > MAX_UNSENT_BYTES
        ):
            return False
        data = self._inbound.convert(payload_b64)
        transport.write(masked_text_frame(self._audio_prefix + data + b'"}}}', self._keys.next()))
        return True

    async def _send(self, message: dict[str, Any]) -> None:
        if self._switching:
            self._queued.append(message)
            return
        try:
            await self._ws.send(orjson.dumps(message).decode())
        except ConnectionClosed:
            self._queued.append(message)  # the reader resumes and sends it after

    async def send_tool_result(self, call_id: str, output: str) -> None:
        try:
            value = orjson.loads(output)
        except orjson.JSONDecodeError:
            value = output
        response: dict[str, Any] = {
            "id": call_id,
            "name": self._call_names.pop(call_id, ""),
            "response": value if isinstance(value, dict) else {"output": value},
        }
        if self.profile.scheduling:
            response["scheduling"] = self.profile.scheduling
        message = {"toolResponse": {"functionResponses": [response]}}
        self._since_handle.append(message)
        await self._send(message)

    async def send_user_text(self, text: str) -> None:
        if self.profile.text_via_realtime_input:
            await self._send({"realtimeInput": {"text": text}})
        else:
            await self._send(wire.user_turn(text))

    async def create_response(self, instructions: str | None = None) -> None:
        """Gemini speaks after a user turn: send the cue (the part after the session's own
        instructions) as one."""
        cue = instructions or "Please continue."
        if cue.startswith(self.config.instructions):
            cue = cue[len(self.config.instructions) :].strip() or "Please continue."
        await self.send_user_text(cue)

    async def cancel_response(self) -> None:
        """No cancel message exists: new user input interrupts the model."""

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        """No truncate message exists (never called: `capabilities.truncates` is False)."""

    async def replay(self, history: list[HistoryItem]) -> None:
        turns = wire.history_turns(history)
        if turns:
            await self._send({"clientContent": {"turns": turns, "turnComplete": False}})

    async def close(self) -> None:
        self._closing = True
        await self._ws.close()

    # -- server → client -----------------------------------------------------------------

    async def events(self) -> AsyncIterator[ProviderEvent]:
        while True:
            try:
                async for raw in self._ws:
                    msg = orjson.loads(raw)
                    if "goAway" in msg:
                        left = wire.parse_duration(str(msg["goAway"].get("timeLeft", "0s")))
                        logger.info("Gemini goAway ({} s left): resuming", left)
                        break
                    for event in self._on_message(msg):
                        yield event
            except ConnectionClosed:
                pass
            except orjson.JSONDecodeError as exc:
                logger.warning("unreadable Gemini frame: {!r}", exc)
            if self._closing:
                yield Closed("model session closed")
                return
            close = self._ws.protocol.close_rcvd
            if close is not None and close.code == 1007:
                yield Closed(f"Gemini refused the session: {close.reason}", fatal=True)
                return
            for event in self._end_turn("incomplete"):
                yield event
            if not await self._resume():
                detail = f"{close.code} {close.reason}" if close is not None else "no close frame"
                yield Closed(f"Gemini connection lost: {detail}")
                return

    async def _resume(self) -> bool:
        """Move to a new connection with the latest handle. False: not resumable."""
        if self._handle is None:
            return False
        self._switching = True
        try:
            await self._ws.close()  # the service refuses a resume while the old one is open
            for delay in RESUME_DELAYS:
                if delay:
                    await asyncio.sleep(delay)
                try:
                    ws = await self.connector.open(self.config, self._handle)
                except ConnectError as exc:
                    logger.warning("Gemini resume failed: {}", exc)
                    if exc.fatal:
                        return False
                    continue
                self._attach(ws)
                self.resumptions += 1
                self._outbound.reset()
                queued = self._since_handle + [
                    m for m in self._queued if m not in self._since_handle
                ]
                self._queued = []
                self._switching = False
                for message in queued:
                    await self._send(message)
                held, self._held = list(self._held), deque(maxlen=HELD_FRAMES)
                for payload in held:
                    self.send_audio(payload)
                return True
            return False
        finally:
            self._switching = False

    def _on_message(self, msg: dict[str, Any]) -> list[ProviderEvent]:
        content = msg.get("serverContent")
        if content is not None:
            return self._on_content(content)
        if (call := msg.get("toolCall")) is not None:
            return self._on_tool_call(call)
        if (cancel := msg.get("toolCallCancellation")) is not None:
            return [ToolCallsCancelled(tuple(str(i) for i in cancel.get("ids") or ()))]
        update = msg.get("sessionResumptionUpdate")
        if update is not None and update.get("resumable") and update.get("newHandle"):
            self._handle = str(update["newHandle"])
            self._since_handle = []
        return []

    def _start_turn(self, out: list[ProviderEvent]) -> _Turn:
        turn = self._turn
        if turn is None:
            if self._user_item is None:
                self._new_user_item(out)
            self._turns += 1
            turn = self._turn = _Turn(f"g{self._turns}")
            out.append(ResponseStarted(turn.id))
            out.append(AgentItem(turn.id, turn.item))
        return turn

    def _new_user_item(self, out: list[ProviderEvent]) -> None:
        self._users += 1
        self._user_item = f"u{self._users}"
        self._user_text = ""
        out.append(UserItem(self._user_item))

    def _on_content(self, content: dict[str, Any]) -> list[ProviderEvent]:
        out: list[ProviderEvent] = []
        if (heard := content.get("inputTranscription")) is not None and heard.get("text"):
            if self._user_item is None:
                self._new_user_item(out)
            assert self._user_item is not None
            self._user_text += str(heard["text"])
            out.append(UserTranscript(self._user_item, self._user_text.strip()))
        model_turn = content.get("modelTurn")
        if model_turn is not None:
            turn = self._start_turn(out)
            if not turn.cut:
                for part in model_turn.get("parts") or ():
                    inline = part.get("inlineData")
                    if inline is not None and not part.get("thought"):
                        payload = self._outbound.convert(inline["data"])
                        if payload:
                            out.append(AudioDelta(turn.id, turn.item, payload))
        if (said := content.get("outputTranscription")) is not None and said.get("text"):
            turn = self._start_turn(out)
            if not turn.cut:
                turn.text += str(said["text"])
        if content.get("interrupted"):
            out.extend(self._interrupted())
        if content.get("generationComplete") and self._turn is not None and not self._turn.cut:
            tail = self._outbound.flush()
            if tail:
                out.append(AudioDelta(self._turn.id, self._turn.item, tail))
        if content.get("turnComplete"):
            out.extend(self._end_turn("completed"))
        return out

    def _interrupted(self) -> list[ProviderEvent]:
        turn = self._turn or self._last_turn
        self._outbound.reset()
        self._user_item = None  # what the caller says now is a new turn
        if turn is None:
            return []
        out: list[ProviderEvent] = []
        if not turn.cut:
            turn.cut = True
            if turn.text:
                out.append(AgentTranscript(turn.id, turn.item, turn.text))
        out.append(Interrupted(turn.id))
        return out

    def _end_turn(self, status: str) -> list[ProviderEvent]:
        turn = self._turn
        if turn is None:
            return []
        out: list[ProviderEvent] = []
        if not turn.cut:
            tail = self._outbound.flush()
            if tail:
                out.append(AudioDelta(turn.id, turn.item, tail))
            if turn.text:
                out.append(AgentTranscript(turn.id, turn.item, turn.text))
        self._turn = None
        self._last_turn = turn
        self._user_item = None
        out.append(ResponseDone(turn.id, "cancelled" if turn.cut else status))
        return out

    def _on_tool_call(self, call: dict[str, Any]) -> list[ProviderEvent]:
        out: list[ProviderEvent] = []
        turn = self._turn or self._last_turn or self._start_turn(out)
        for fc in call.get("functionCalls") or ():
            call_id = str(fc.get("id", ""))
            name = str(fc.get("name", ""))
            self._call_names[call_id] = name
            args = orjson.dumps(fc.get("args") or {}).decode()
            out.append(FunctionCall(turn.id, call_id, name, args))
        return out
