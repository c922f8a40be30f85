"""OpenAI Realtime (GA) over a directly opened WebSocket.

μ-law in and out (`audio/pcmu`): caller audio is forwarded as the base64 string Twilio sent and
model audio deltas are handed to the bridge as base64 strings, so no audio is ever decoded here.
Each server frame is parsed once with orjson and mapped to a provider-neutral event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import State

from caller_engine.failures import describe
from caller_engine.realtime.base import (
    CLIENT_DRIVEN,
    AgentItem,
    AgentTranscript,
    AudioDelta,
    Capabilities,
    Closed,
    ConnectError,
    FunctionCall,
    HistoryItem,
    ProviderError,
    ProviderEvent,
    ResponseDone,
    ResponseStarted,
    SessionConfig,
    SessionReady,
    SpeechStarted,
    SpeechStopped,
    UserItem,
    UserTranscript,
)
from caller_engine.realtime.proxy import model_proxy
from caller_engine.realtime.wsframe import MaskKeys, masked_text_frame

# Errors after which a new connection cannot help.
FATAL_CODES = frozenset(
    {"invalid_api_key", "insufficient_quota", "model_not_found", "account_deactivated"}
)
# Close codes the service uses to refuse a session (credentials/account; interface misuse).
FATAL_CLOSE_CODES = frozenset({3000, 4000})
# Caller audio is dropped (and counted) rather than queued once this much is unsent.
MAX_UNSENT_BYTES = 64 * 1024
_APPEND_PREFIX = b'{"type":"input_audio_buffer.append","audio":"'
_APPEND_SUFFIX = b'"}'
# Our `response.create` events carry this event_id (echoed in an error that refuses one) and
# this metadata key (echoed in the `response.created` it starts), so the bridge can tell its
# own responses from the ones server VAD starts, and a refusal of its request from others.
CREATE_EVENT_ID = "ce_response_create"
REQUEST_TAG = "caller_engine_request"


def session_update(config: SessionConfig) -> dict[str, Any]:
    """The GA `session.update` event for a config."""
    turn: dict[str, Any] = {
        "type": config.vad_type,
        "create_response": True,
        "interrupt_response": config.interrupt_response,
    }
    if config.vad_type == "server_vad":
        turn.update(
            threshold=config.vad_threshold,
            silence_duration_ms=config.vad_silence_ms,
            prefix_padding_ms=config.vad_prefix_ms,
        )
    audio_in: dict[str, Any] = {
        "format": {"type": "audio/pcmu"},
        "transcription": {"model": config.transcription_model},
        "turn_detection": turn,
    }
    if config.noise_reduction:
        audio_in["noise_reduction"] = {"type": config.noise_reduction}
    session: dict[str, Any] = {
        "type": "realtime",
        "instructions": config.instructions,
        "output_modalities": ["audio"],
        "audio": {
            "input": audio_in,
            "output": {"format": {"type": "audio/pcmu"}, "voice": config.voice},
        },
    }
    if config.tools:
        session["tools"] = config.tools
        session["tool_choice"] = "auto"
    return {"type": "session.update", "session": session}


def history_item(item: HistoryItem) -> dict[str, Any]:
    if item.role == "user":
        return {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": item.text}],
        }
    if item.role == "assistant":
        return {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": item.text}],
        }
    if item.role == "tool_call":
        return {
            "type": "function_call",
            "call_id": item.call_id,
            "name": item.name,
            "arguments": item.text,
        }
    return {"type": "function_call_output", "call_id": item.call_id, "output": item.text}


def close_is_fatal(exc: ConnectionClosed) -> bool:
    """A refusal a new connection cannot fix: the close reason names the error code."""
    frame = exc.rcvd
    if frame is None:
        return False
    return frame.code in FATAL_CLOSE_CODES or any(c in frame.reason for c in FATAL_CODES)


def parse_event(raw: str | bytes) -> ProviderEvent | None:
    """Map one server frame to a neutral event; None for events the bridge does not use."""
    msg = orjson.loads(raw)
    kind = msg.get("type")
    if kind == "response.output_audio.delta":
        return AudioDelta(msg["response_id"], msg["item_id"], msg["delta"])
    if kind == "input_audio_buffer.speech_started":
        return SpeechStarted(msg.get("item_id", ""), int(msg.get("audio_start_ms", 0)))
    if kind == "input_audio_buffer.speech_stopped":
        return SpeechStopped(msg.get("item_id", ""), int(msg.get("audio_end_ms", 0)))
    if kind == "input_audio_buffer.committed":
        return UserItem(msg.get("item_id", ""))
    if kind == "conversation.item.input_audio_transcription.completed":
        return UserTranscript(msg.get("item_id", ""), str(msg.get("transcript", "")))
    if kind == "response.created":
        response = msg["response"]
        return ResponseStarted(response["id"], REQUEST_TAG in (response.get("metadata") or ()))
    if kind == "response.output_item.added":
        item = msg.get("item") or {}
        if item.get("type") == "message":
            return AgentItem(msg.get("response_id", ""), item.get("id", ""))
        return None
    if kind == "response.output_audio_transcript.done":
        return AgentTranscript(msg["response_id"], msg["item_id"], str(msg.get("transcript", "")))
    if kind == "response.function_call_arguments.done":
        return FunctionCall(
            msg.get("response_id", ""), msg["call_id"], str(msg.get("name", "")), msg["arguments"]
        )
    if kind == "response.done":
        response = msg.get("response") or {}
        rid = str(response.get("id", ""))
        calls = tuple(
            FunctionCall(rid, o["call_id"], str(o.get("name", "")), str(o.get("arguments", "")))
            for o in response.get("output") or ()
            if o.get("type") == "function_call"
        )
        return ResponseDone(rid, str(response.get("status", "completed")), calls)
    if kind == "session.updated":
        return SessionReady()
    if kind == "error":
        error = msg.get("error") or {}
        code = str(error.get("code") or error.get("type") or "unknown")
        return ProviderError(
            code,
            str(error.get("message", "")),
            fatal=code in FATAL_CODES,
            refused_request=error.get("event_id") == CREATE_EVENT_ID,
        )
    return None


class OpenAIRealtimeSession:
    def __init__(self, ws: ClientConnection, config: SessionConfig) -> None:
        self._ws = ws
        self._protocol = ws.protocol
        self._transport = ws.transport
        self._keys = MaskKeys()
        self.config = config
        # Client-driven; with `interrupt_response` off the bridge cancels on barge-in itself.
        self._capabilities = replace(CLIENT_DRIVEN, cancels_on_barge_in=config.interrupt_response)

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    async def _send(self, event: dict[str, Any]) -> None:
        """Send a control event. On a closed socket it is dropped: `events()` reports the
        closure, and the bridge reconnects and replays the conversation."""
        try:
            await self._ws.send(orjson.dumps(event).decode())
        except ConnectionClosed:
            return

    def send_audio(self, payload_b64: str) -> bool:
        """Write one append frame now; False (dropped) when the socket is closed or backed
        up. Base64 is ASCII, so the event is built from bytes without a JSON encoder."""
        transport = self._transport
        if (
            self._protocol.state is not State.OPEN
            or transport.is_closing()
            or transport.get_write_buffer_size() > MAX_UNSENT_BYTES
        ):
            return False
        event = _APPEND_PREFIX + payload_b64.encode("ascii") + _APPEND_SUFFIX
        transport.write(masked_text_frame(event, self._keys.next()))
        return True

    async def send_tool_result(self, call_id: str, output: str) -> None:
        item = {"type": "function_call_output", "call_id": call_id, "output": output}
        await self._send({"type": "conversation.item.create", "item": item})

    async def send_user_text(self, text: str) -> None:
        item = history_item(HistoryItem("user", text))
        await self._send({"type": "conversation.item.create", "item": item})

    async def create_response(self, instructions: str | None = None) -> None:
        response: dict[str, Any] = {"metadata": {REQUEST_TAG: "1"}}
        if instructions:
            response["instructions"] = instructions
        event = {"type": "response.create", "event_id": CREATE_EVENT_ID, "response": response}
        await self._send(event)

    async def cancel_response(self) -> None:
        await self._send({"type": "response.cancel"})

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        await self._send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": int(audio_end_ms),
            }
        )

    async def replay(self, history: list[HistoryItem]) -> None:
        for item in history:
            await self._send({"type": "conversation.item.create", "item": history_item(item)})

    async def events(self) -> AsyncIterator[ProviderEvent]:
        try:
            async for raw in self._ws:
                try:
                    event = parse_event(raw)
                except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                    yield ProviderError("bad_frame", f"unreadable model event: {exc!r}")
                    continue
                if event is None:
                    continue
                yield event
                if isinstance(event, ProviderError) and event.fatal:
                    yield Closed(f"fatal model error {event.code}", fatal=True)
                    return
        except ConnectionClosed as exc:
            frame = exc.rcvd
            detail = f"{frame.code} {frame.reason}".strip() if frame else "no close frame"
            yield Closed(f"model socket closed: {detail}", fatal=close_is_fatal(exc))
            return
        yield Closed("model socket closed")

    async def close(self) -> None:
        await self._ws.close()


class OpenAIRealtimeConnector:
    def __init__(
        self,
        url: str,
        model: str,
        api_key: str,
        *,
        auth_header: str = "Authorization",
        open_timeout: float = 5.0,
    ) -> None:
        sep = "&" if "?" in url else "?"
        self.url = f"{url}{sep}model={model}"
        value = f"Bearer {api_key}" if auth_header.lower() == "authorization" else api_key
        self.headers = {auth_header: value}
        self.open_timeout = open_timeout

    async def connect(self, config: SessionConfig) -> OpenAIRealtimeSession:
        try:
            ws = await connect(
                self.url,
                proxy=model_proxy(self.url),
                additional_headers=self.headers,
                open_timeout=self.open_timeout,
                close_timeout=1.0,
                compression=None,  # base64 audio does not compress; deflate would cost CPU
                max_size=4 * 1024 * 1024,
                ping_interval=20,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            fatal = status in (401, 403, 404)
            raise ConnectError(f"model refused the connection: HTTP {status}", fatal=fatal) from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ConnectError(f"model unreachable: {describe(exc)}", fatal=False) from exc
        session = OpenAIRealtimeSession(ws, config)
        try:
            await ws.send(orjson.dumps(session_update(config)).decode())
        except ConnectionClosed as exc:
            reason = exc.rcvd.reason if exc.rcvd else "no close frame"
            raise ConnectError(
                f"model closed the connection during setup: {reason}", fatal=close_is_fatal(exc)
            ) from exc
        return session
