"""One emulated Realtime connection: handshake checks, client events, turns, conversation.

Every client event is validated (`validation.py`); an invalid one, or one the live server
would refuse (cancel with nothing active, truncate past the audio sent...), is answered
with an `error` event and also recorded in `violations`, so a test can assert that a
client never provoked a server error.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSMsgType, web

from caller_engine.sim.openai.realtime import handshake, protocol, responses
from caller_engine.sim.openai.realtime.protocol import Rejection
from caller_engine.sim.openai.realtime.responses import ItemRecord, ResponseRun
from caller_engine.sim.openai.realtime.script import RealtimeScript
from caller_engine.sim.openai.realtime.turns import InputTurns
from caller_engine.sim.openai.realtime.validation import check_client_event

if TYPE_CHECKING:
    from caller_engine.sim.openai.realtime.server import RealtimeEmulator

AUDIO_DELTA = "response.output_audio.delta"
Handler = Callable[[dict[str, Any]], Awaitable[Rejection | None]]


class EmulatedRealtimeSession:
    def __init__(
        self, emulator: RealtimeEmulator, ws: web.WebSocketResponse, request: web.Request
    ) -> None:
        self.emulator = emulator
        self.model: str = request.query.get("model", "")
        self.headers: dict[str, str] = dict(request.headers)
        self.received: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.input_audio = bytearray()
        self.output_audio = bytearray()
        self.session: dict[str, Any] = protocol.default_session(self.model)
        self.violations: list[str] = []
        self.truncations: list[dict[str, Any]] = []
        self.closed = asyncio.Event()
        factory = emulator.script_factory
        self.script: RealtimeScript = factory() if factory else RealtimeScript()
        self.response_requests: list[dict[str, Any]] = []
        self.function_call_outputs: list[dict[str, Any]] = []
        self.user_transcripts: list[str] = []
        self.responses: list[ResponseRun] = []
        self.items: dict[str, ItemRecord] = {}
        self.order: list[str] = []
        self.call_ids: set[str] = set()
        self.conversation_id = protocol.new_id("conv")
        self.active_response: ResponseRun | None = None
        self.audio_produced = False
        self._ws = ws
        self._request = request
        self._lock = asyncio.Lock()
        self._sent_signal = asyncio.Event()
        self.turns = InputTurns(self)
        self._handlers: dict[str, Handler] = {
            "session.update": self._on_session_update,
            "input_audio_buffer.append": self._on_append,
            "input_audio_buffer.commit": self._on_commit,
            "input_audio_buffer.clear": self._on_clear,
            "output_audio_buffer.clear": self._on_output_clear,
            "conversation.item.create": self._on_item_create,
            "conversation.item.delete": self._on_item_delete,
            "conversation.item.retrieve": self._on_item_retrieve,
            "conversation.item.truncate": self._on_truncate,
            "response.create": self._on_response_create,
            "response.cancel": self._on_response_cancel,
        }

    # -- inspection ------------------------------------------------------------------------

    def events(self, type: str) -> list[dict[str, Any]]:
        """Sent events of one type, in order."""
        return [event for event in self.sent if event.get("type") == type]

    async def wait_for(self, type: str, count: int = 1, within: float = 5.0) -> dict[str, Any]:
        """Wait until `count` events of `type` have been sent; returns the `count`-th."""
        deadline = asyncio.get_running_loop().time() + within
        while len(found := self.events(type)) < count:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"{len(found)}/{count} '{type}' events sent")
            signal = self._sent_signal
            try:
                await asyncio.wait_for(signal.wait(), remaining)
            except TimeoutError:
                continue
        return found[count - 1]

    @property
    def running_responses(self) -> list[ResponseRun]:
        return [run for run in self.responses if not run.finished]

    # -- sending ---------------------------------------------------------------------------

    async def emit(
        self,
        event: dict[str, Any],
        run: ResponseRun | None = None,
        before_send: Callable[[], None] | None = None,
    ) -> bool:
        """Send one server event; with `run`, only while that response is not cancelled.
        `before_send` runs just before the event is written, with no await in between: state
        the event announces (a response is over) holds before any client reaction can arrive,
        even when the write then waits for the socket to drain."""
        body = {"type": event["type"], "event_id": protocol.new_id("event")}
        body.update((key, value) for key, value in event.items() if key != "type")
        payload = orjson.dumps(body)
        async with self._lock:
            if run is not None and run.cancel_reason is not None:
                return False
            if self._ws.closed:
                return False
            at = asyncio.get_running_loop().time()
            if before_send is not None:
                before_send()
            try:
                await self._ws.send_str(payload.decode())
            except (ConnectionError, RuntimeError):
                return False
            if self.emulator.keep_audio_events or body["type"] != AUDIO_DELTA:
                self.sent.append(orjson.loads(payload))
            self._sent_signal.set()
            self._sent_signal = asyncio.Event()
        hook = self.emulator.on_server_event
        if hook is not None:
            hook(self, body, at)
        return True

    async def _send_error(self, rejection: Rejection, client_event_id: str | None) -> None:
        await self.emit({"type": "error", "error": rejection.body(client_event_id)})

    # -- conversation bookkeeping (also used by the response streamer) ---------------------

    def register_item(self, record: ItemRecord) -> None:
        self.items[record.item["id"]] = record

    def append_to_conversation(self, item_id: str, after: str | None = None) -> str | None:
        """Place an item (at the end, or after `after`; "root" = first); returns its previous."""
        if after is None:
            self.order.append(item_id)
        elif after == "root":
            self.order.insert(0, item_id)
        else:
            self.order.insert(self.order.index(after) + 1, item_id)
        return self.previous_item_of(item_id)

    def previous_item_of(self, item_id: str) -> str | None:
        if item_id not in self.order:
            return None
        index = self.order.index(item_id)
        return self.order[index - 1] if index > 0 else None

    def response_finished(self, run: ResponseRun) -> None:
        if self.active_response is run:
            self.active_response = None

    # -- connection ------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if await self._refuse():
                return
            await self.emit({"type": "session.created", "session": self.session})
            async for message in self._ws:
                if message.type == WSMsgType.TEXT:
                    await self.handle_text(message.data)
                elif message.type == WSMsgType.BINARY:
                    self.violations.append("<binary frame>: events must be JSON text frames")
                    await self._send_error(protocol.binary_frame(), None)
        finally:
            tasks = [run.task for run in self.responses if run.task and not run.task.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
            self.closed.set()

    async def _refuse(self) -> bool:
        emulator = self.emulator
        refused = handshake.refusal(
            self.headers,
            self.model,
            api_key=emulator.api_key,
            auth_header=emulator.auth_header,
            fatal_on_connect=emulator.fatal_on_connect,
        )
        if refused is None:
            return False
        if refused.violation:
            self.violations.append(refused.violation)
        await self._send_error(refused.rejection, None)
        await self._ws.close(code=refused.close_code, message=refused.close_reason.encode())
        return True

    async def drop(self, code: int | None = 1011) -> None:
        """Close from the server side without warning: a close frame with `code`, or with
        `code=None` a TCP abort (the client sees 1006)."""
        if code is None:
            transport = self._request.transport
            if transport is not None:
                transport.abort()
            return
        reason = b"going away" if code == 1001 else b"server error"
        await self._ws.close(code=code, message=reason)

    # -- client events ---------------------------------------------------------------------

    async def handle_text(self, text: str) -> None:
        arrived = asyncio.get_running_loop().time()
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError:
            self.received.append({"unparsed": text})
            self.violations.append("<unparsed>: not JSON")
            await self._send_error(protocol.invalid_json(), None)
            return
        check = check_client_event(event)
        if self.emulator.keep_audio_events or not (check.ok and _is_append(event)):
            self.received.append(event)
        self.violations.extend(check.violations)
        hook = self.emulator.on_client_event
        if hook is not None and isinstance(event, dict) and not _is_append(event):
            hook(self, event, arrived)
        event_id = event.get("event_id") if isinstance(event, dict) else None
        client_event_id = event_id if isinstance(event_id, str) else None
        if check.rejection is not None:
            await self._send_error(check.rejection, client_event_id)
            return
        rejection = await self._handlers[event["type"]](event)
        if rejection is not None:
            self.violations.append(f"{event['type']}: {rejection.message}")
            await self._send_error(rejection, client_event_id)

    async def _on_session_update(self, event: dict[str, Any]) -> Rejection | None:
        body: dict[str, Any] = event["session"]
        if body["type"] != self.session["type"]:
            return protocol.session_type_locked(body["type"])
        if "model" in body and body["model"] != self.session["model"]:
            return protocol.model_locked()
        voice = ((body.get("audio") or {}).get("output") or {}).get("voice")
        current = self.session["audio"]["output"].get("voice")
        if voice is not None and voice != current and self.audio_produced:
            return protocol.voice_locked()
        self.session = protocol.merge_session(self.session, body)
        self.turns.refresh()
        await self.emit({"type": "session.updated", "session": self.session})
        return None

    async def _on_append(self, event: dict[str, Any]) -> Rejection | None:
        try:
            data = base64.b64decode(event["audio"], validate=True)
        except (binascii.Error, ValueError):
            return protocol.bad_base64()
        await self.turns.append(data)
        return None

    async def _on_commit(self, event: dict[str, Any]) -> Rejection | None:
        return await self.turns.commit_by_client()

    async def _on_clear(self, event: dict[str, Any]) -> Rejection | None:
        await self.turns.clear()
        return None

    async def _on_output_clear(self, event: dict[str, Any]) -> Rejection | None:
        return protocol.output_buffer_clear_over_websocket()

    async def _on_item_create(self, event: dict[str, Any]) -> Rejection | None:
        item: dict[str, Any] = event["item"]
        item_id = item.get("id") or protocol.new_id("item")
        if item_id in self.items:
            return Rejection(
                "invalid_value", f"Item with id '{item_id}' already exists.", "item.id"
            )
        after = event.get("previous_item_id")
        if after is not None and after != "root" and after not in self.order:
            return protocol.item_not_found(after, "previous_item_id")
        if item["type"] == "function_call_output":
            if item["call_id"] not in self.call_ids:
                return protocol.unknown_call_id(item["call_id"])
            self.function_call_outputs.append(
                {"call_id": item["call_id"], "output": item["output"]}
            )
        elif item["type"] == "function_call" and item.get("call_id"):
            self.call_ids.add(item["call_id"])
        stored = protocol.client_item(item, item_id)
        self.register_item(ItemRecord(stored))
        previous = self.append_to_conversation(item_id, after)
        for kind in ("conversation.item.added", "conversation.item.done"):
            await self.emit({"type": kind, "previous_item_id": previous, "item": stored})
        return None

    async def _on_item_delete(self, event: dict[str, Any]) -> Rejection | None:
        item_id = event["item_id"]
        if item_id not in self.items:
            return protocol.item_not_found(item_id)
        del self.items[item_id]
        if item_id in self.order:
            self.order.remove(item_id)
        await self.emit({"type": "conversation.item.deleted", "item_id": item_id})
        return None

    async def _on_item_retrieve(self, event: dict[str, Any]) -> Rejection | None:
        record = self.items.get(event["item_id"])
        if record is None:
            return protocol.item_not_found(event["item_id"])
        await self.emit({"type": "conversation.item.retrieved", "item": record.item})
        return None

    async def _on_truncate(self, event: dict[str, Any]) -> Rejection | None:
        item_id, end_ms = event["item_id"], event["audio_end_ms"]
        record = self.items.get(item_id)
        if record is None:
            return protocol.item_not_found(item_id)
        item = record.item
        if item.get("role") != "assistant" or record.audio_bytes == 0:
            return protocol.truncate_not_audio()
        if event["content_index"] != 0:
            return protocol.content_index_invalid(event["content_index"])
        if end_ms < 0:
            return Rejection("invalid_value", "audio_end_ms must be >= 0.", "audio_end_ms")
        if end_ms > record.audio_ms:
            return protocol.truncate_beyond_audio(record.audio_ms, end_ms)
        for part in item.get("content", []):
            if part.get("type") == "output_audio":
                part["transcript"] = ""
        self.truncations.append(
            {"item_id": item_id, "audio_end_ms": end_ms, "audio_sent_ms": record.audio_ms}
        )
        await self.emit(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": end_ms,
            }
        )
        return None

    async def _on_response_create(self, event: dict[str, Any]) -> Rejection | None:
        params: dict[str, Any] = copy.deepcopy(event.get("response") or {})
        self.response_requests.append(params)
        active = self.active_response
        if params.get("conversation", "auto") != "none" and active is not None:
            return protocol.active_response(active.id)
        await self.start_response(params, source="client")
        return None

    async def _on_response_cancel(self, event: dict[str, Any]) -> Rejection | None:
        target = event.get("response_id")
        if target:
            run = next((r for r in self.running_responses if r.id == target), None)
        else:
            run = self.active_response
        if run is None or not await self.cancel_response(run, "client_cancelled"):
            return protocol.cancel_not_active()
        return None

    # -- responses -------------------------------------------------------------------------

    async def start_response(self, params: dict[str, Any], source: str) -> ResponseRun:
        run = ResponseRun(
            id=protocol.new_id("resp"),
            scripted=self.script.next_response(),
            params=params,
            in_conversation=params.get("conversation", "auto") != "none",
            source=source,
        )
        self.responses.append(run)
        if run.in_conversation:
            self.active_response = run
        await self.emit(
            {"type": "response.created", "response": responses.response_view(self, run)}
        )
        run.task = asyncio.create_task(responses.stream(self, run))
        return run

    async def cancel_response(self, run: ResponseRun, reason: str) -> bool:
        """Stop a running response; True if it ended as cancelled."""
        if run.finished:
            return False
        if run.cancel_reason is None:
            run.cancel_reason = reason
        run.wake.set()
        if run.task is not None:
            await asyncio.wait({run.task})
        return run.status == "cancelled"

    # -- user turns (test controls) --------------------------------------------------------

    async def user_speaks(self, text: str) -> None:
        """A user utterance without audio: the events VAD would produce for it, with
        `text` as its transcript, then the auto-response if turn_detection asks for one."""
        await self.turns.user_speaks(text)

    async def speech_started(self) -> None:
        """Trigger `input_audio_buffer.speech_started` now, as VAD would on barge-in; later
        silence in the client's audio ends the turn as usual."""
        await self.turns.manual_speech_started()


def _is_append(event: Any) -> bool:
    return isinstance(event, dict) and event.get("type") == "input_audio_buffer.append"
