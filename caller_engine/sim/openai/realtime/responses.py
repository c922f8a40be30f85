"""One model response streamed like the GA server, and its cancellation.

Order of a completed response: response.created, then for the message (if any)
output_item.added, conversation.item.added, content_part.added, the audio and transcript
deltas (audio faster than real time), output_audio.done, output_audio_transcript.done,
content_part.done, conversation.item.done, output_item.done; then one function_call item
per scripted tool call (added, arguments delta/done, done); then response.done and
rate_limits.updated. Responses with `conversation: "none"` leave the conversation alone.

Cancellation is cooperative: the canceller sets `cancel_reason`; the next event the stream
would send is dropped instead, and the stream closes the open parts (status incomplete)
and sends response.done with status "cancelled". No delta follows that (the emulator's
`late_deltas` setting lets a few already-generated deltas slip out first, as on the wire).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import re
from array import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from caller_engine.audio import mulaw
from caller_engine.sim.openai.realtime import protocol
from caller_engine.sim.openai.realtime.script import ScriptedResponse

if TYPE_CHECKING:
    from caller_engine.sim.openai.realtime.session import EmulatedRealtimeSession


@dataclass
class ItemRecord:
    """The server's copy of a conversation item, plus the output audio sent for it."""

    item: dict[str, Any]
    audio_bytes: int = 0
    bytes_per_ms: int = 8

    @property
    def audio_ms(self) -> int:
        return self.audio_bytes // self.bytes_per_ms


@dataclass
class ResponseRun:
    id: str
    scripted: ScriptedResponse
    params: dict[str, Any]
    in_conversation: bool
    source: str  # "client" or "turn_detection"
    status: str = "in_progress"
    cancel_reason: str | None = None
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    output: list[dict[str, Any]] = field(default_factory=list)
    message: ItemRecord | None = None
    part_open: bool = False
    transcript_sent: str = ""
    remaining_chunks: list[bytes] = field(default_factory=list)
    open_call: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.status != "in_progress"


def to_output_format(ulaw: bytes, audio_format: dict[str, Any] | None) -> bytes:
    """Scripted μ-law in the session's output format (pcm: 24 kHz little-endian int16)."""
    if (audio_format or {}).get("type") != "audio/pcm":
        return ulaw
    tripled = array("h")
    for sample in mulaw.decode(ulaw):
        tripled.extend((sample, sample, sample))
    return tripled.tobytes()


def transcript_pieces(text: str) -> list[str]:
    pieces = re.findall(r"\s*\S+\s*", text)
    return pieces or ([text] if text else [])


def response_view(session: EmulatedRealtimeSession, run: ResponseRun, **extra: Any) -> Any:
    params = run.params
    output_cfg = session.session.get("audio", {}).get("output", {})
    voice = ((params.get("audio") or {}).get("output") or {}).get("voice") or output_cfg.get(
        "voice"
    )
    return protocol.response_object(
        run.id,
        status=extra.pop("status", run.status),
        conversation_id=session.conversation_id if run.in_conversation else None,
        output=extra.pop("output", list(run.output)),
        modalities=modalities(session, run),
        audio_output={"format": output_cfg.get("format"), "voice": voice},
        max_output_tokens=params.get("max_output_tokens")
        or session.session.get("max_output_tokens", "inf"),
        metadata=params.get("metadata"),
        **extra,
    )


def modalities(session: EmulatedRealtimeSession, run: ResponseRun) -> list[str]:
    chosen = run.params.get("output_modalities") or session.session.get("output_modalities")
    return list(chosen or ["audio"])


async def stream(session: EmulatedRealtimeSession, run: ResponseRun) -> None:
    try:
        if await _stream_items(session, run):
            await _complete(session, run)
        elif run.cancel_reason is None:
            run.status = "failed"  # the connection went away mid-stream
        else:
            await _finish_cancelled(session, run)
    finally:
        session.response_finished(run)


async def _stream_items(session: EmulatedRealtimeSession, run: ResponseRun) -> bool:
    """Send every item of the response; False as soon as a cancel stops it."""
    scripted = run.scripted
    if scripted.has_message and not await _stream_message(session, run):
        return False
    for name, arguments in scripted.tool_calls:
        if not await _stream_call(session, run, name, arguments):
            return False
    return True


async def _emit(session: EmulatedRealtimeSession, run: ResponseRun, event: dict[str, Any]) -> bool:
    return await session.emit(event, run)


async def _pause(session: EmulatedRealtimeSession, run: ResponseRun) -> None:
    interval = session.emulator.delta_interval
    if interval <= 0:
        await asyncio.sleep(0)
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(interval):  # no extra task per delta (wait_for makes one)
            await run.wake.wait()


def _ids(run: ResponseRun, record: ItemRecord, output_index: int) -> dict[str, Any]:
    return {
        "response_id": run.id,
        "item_id": record.item["id"],
        "output_index": output_index,
        "content_index": 0,
    }


async def _stream_message(session: EmulatedRealtimeSession, run: ResponseRun) -> bool:
    scripted = run.scripted
    audio_mode = "audio" in modalities(session, run)
    output_format = session.session.get("audio", {}).get("output", {}).get("format")
    record = ItemRecord(
        protocol.assistant_item(protocol.new_id("item"), "in_progress", []),
        bytes_per_ms=protocol.audio_bytes_per_ms(output_format),
    )
    index = len(run.output)
    added = {"type": "response.output_item.added", "response_id": run.id, "output_index": index}
    if not await _emit(session, run, {**added, "item": record.item}):
        return False
    run.message = record
    if run.in_conversation:
        session.register_item(record)
        previous = session.append_to_conversation(record.item["id"])
        event = {"type": "conversation.item.added", "previous_item_id": previous}
        if not await _emit(session, run, {**event, "item": record.item}):
            return False
    ids = _ids(run, record, index)
    part = {"type": "audio", "transcript": ""} if audio_mode else {"type": "text", "text": ""}
    if not await _emit(session, run, {"type": "response.content_part.added", **ids, "part": part}):
        return False
    run.part_open = True
    pieces = transcript_pieces(scripted.text)
    if not audio_mode:
        for piece in pieces:
            if not await _emit(
                session, run, {"type": "response.output_text.delta", **ids, "delta": piece}
            ):
                return False
            run.transcript_sent += piece
            await _pause(session, run)
        return await _close_message(session, run, "completed")
    ulaw = scripted.audio if scripted.audio is not None else mulaw.tone(scripted.audio_ms)
    audio = to_output_format(ulaw, output_format)
    size = max(1, session.emulator.chunk_ms * record.bytes_per_ms)
    run.remaining_chunks = [audio[at : at + size] for at in range(0, len(audio), size)]
    total = len(run.remaining_chunks)
    sent_pieces = 0
    for position in range(total):
        due = math.ceil((position + 1) * len(pieces) / total)
        while sent_pieces < due:
            piece = pieces[sent_pieces]
            delta = {"type": "response.output_audio_transcript.delta", **ids, "delta": piece}
            if not await _emit(session, run, delta):
                return False
            run.transcript_sent += piece
            sent_pieces += 1
        if not await send_audio_delta(session, run, record, index, check=True):
            return False
        await _pause(session, run)
    for piece in pieces[sent_pieces:]:
        delta = {"type": "response.output_audio_transcript.delta", **ids, "delta": piece}
        if not await _emit(session, run, delta):
            return False
        run.transcript_sent += piece
    return await _close_message(session, run, "completed")


async def send_audio_delta(
    session: EmulatedRealtimeSession,
    run: ResponseRun,
    record: ItemRecord,
    output_index: int,
    *,
    check: bool,
) -> bool:
    """Send the next remaining chunk; with `check`, only if the run is not cancelled."""
    chunk = run.remaining_chunks[0]
    event = {
        "type": "response.output_audio.delta",
        **_ids(run, record, output_index),
        "delta": base64.b64encode(chunk).decode("ascii"),
    }
    sent = await _emit(session, run, event) if check else await session.emit(event)
    if sent:
        run.remaining_chunks.pop(0)
        record.audio_bytes += len(chunk)
        session.output_audio.extend(chunk)
        session.audio_produced = True
    return sent


async def _close_message(session: EmulatedRealtimeSession, run: ResponseRun, status: str) -> bool:
    """The closing events of the message item; unconditional once a cancel is under way."""
    record = run.message
    assert record is not None
    index = run.output.index(record.item) if record.item in run.output else len(run.output)
    ids = _ids(run, record, index)
    audio_mode = "audio" in modalities(session, run)
    send = session.emit if status != "completed" else (lambda event: _emit(session, run, event))
    text = run.transcript_sent
    if run.part_open:
        if audio_mode:
            events = [
                {"type": "response.output_audio.done", **ids},
                {"type": "response.output_audio_transcript.done", **ids, "transcript": text},
                {
                    "type": "response.content_part.done",
                    **ids,
                    "part": {"type": "audio", "transcript": text},
                },
            ]
        else:
            events = [
                {"type": "response.output_text.done", **ids, "text": text},
                {
                    "type": "response.content_part.done",
                    **ids,
                    "part": {"type": "text", "text": text},
                },
            ]
        for event in events:
            if not await send(event):
                return False
        content = (
            {"type": "output_audio", "transcript": text}
            if audio_mode
            else {"type": "output_text", "text": text}
        )
        record.item["content"] = [content]
    record.item["status"] = status
    if run.in_conversation:
        previous = session.previous_item_of(record.item["id"])
        item_done = {"type": "conversation.item.done", "previous_item_id": previous}
        if not await send({**item_done, "item": record.item}):
            return False
    done = {"type": "response.output_item.done", "response_id": run.id, "output_index": index}
    if not await send({**done, "item": record.item}):
        return False
    run.output.append(record.item)
    run.message = None
    run.part_open = False
    return True


async def _stream_call(
    session: EmulatedRealtimeSession, run: ResponseRun, name: str, arguments: dict[str, Any]
) -> bool:
    index = len(run.output)
    item_id, call_id = protocol.new_id("item"), protocol.new_id("call")
    text = orjson.dumps(arguments).decode()
    item = protocol.function_call_item(item_id, call_id, name, "", "in_progress")
    added = {"type": "response.output_item.added", "response_id": run.id, "output_index": index}
    if not await _emit(session, run, {**added, "item": item}):
        return False
    run.open_call = item
    session.call_ids.add(call_id)
    if run.in_conversation:
        session.register_item(ItemRecord(item))
        previous = session.append_to_conversation(item_id)
        event = {"type": "conversation.item.added", "previous_item_id": previous, "item": item}
        if not await _emit(session, run, event):
            return False
    ids = {"response_id": run.id, "item_id": item_id, "output_index": index, "call_id": call_id}
    half = len(text) // 2
    for piece in (text[:half], text[half:]):
        if piece and not await _emit(
            session, run, {"type": "response.function_call_arguments.delta", **ids, "delta": piece}
        ):
            return False
    done_args = {"type": "response.function_call_arguments.done", **ids, "name": name}
    if not await _emit(session, run, {**done_args, "arguments": text}):
        return False
    item["arguments"] = text
    item["status"] = "completed"
    if run.in_conversation:
        previous = session.previous_item_of(item_id)
        item_done = {"type": "conversation.item.done", "previous_item_id": previous}
        if not await _emit(session, run, {**item_done, "item": item}):
            return False
    done = {"type": "response.output_item.done", "response_id": run.id, "output_index": index}
    if not await _emit(session, run, {**done, "item": item}):
        return False
    run.output.append(item)
    run.open_call = None
    return True


def _usage(session: EmulatedRealtimeSession, run: ResponseRun) -> dict[str, Any]:
    instructions = run.params.get("instructions") or session.session.get("instructions") or ""
    audio_bytes = sum(
        record.audio_bytes
        for record in session.items.values()
        if record.item.get("role") == "assistant" and record.item in run.output
    )
    text_out = len(run.transcript_sent.split()) + sum(
        len(item.get("arguments", "")) // 4 for item in run.output
    )
    return protocol.response_usage(
        input_text=len(instructions) // 4 + 1,
        input_audio=len(session.input_audio) // 800,
        output_text=text_out,
        output_audio=audio_bytes // 400,
    )


async def _complete(session: EmulatedRealtimeSession, run: ResponseRun) -> None:
    body = response_view(session, run, status="completed", usage=_usage(session, run))

    def finished() -> None:
        # No longer active once response.done is on its way: a response.create sent in reply
        # to it must not be refused, even while this write waits for the socket to drain.
        run.status = "completed"
        session.response_finished(run)

    done = {"type": "response.done", "response": body}
    if not await session.emit(done, run, before_send=finished):
        await _finish_cancelled(session, run)
        return
    await session.emit({"type": "rate_limits.updated", **protocol.rate_limits()})


async def _finish_cancelled(session: EmulatedRealtimeSession, run: ResponseRun) -> None:
    record = run.message
    if record is not None:
        index = len(run.output)
        for _ in range(min(session.emulator.late_deltas, len(run.remaining_chunks))):
            await send_audio_delta(session, run, record, index, check=False)
        await _close_message(session, run, "incomplete")
    if run.open_call is not None:
        item = run.open_call
        item["status"] = "incomplete"
        if run.in_conversation:
            previous = session.previous_item_of(item["id"])
            await session.emit(
                {"type": "conversation.item.done", "previous_item_id": previous, "item": item}
            )
        done = {"type": "response.output_item.done", "response_id": run.id}
        await session.emit({**done, "output_index": len(run.output), "item": item})
        run.output.append(item)
        run.open_call = None
    run.status = "cancelled"
    details = {"type": "cancelled", "reason": run.cancel_reason or "client_cancelled"}
    body = response_view(
        session, run, status="cancelled", status_details=details, usage=_usage(session, run)
    )
    session.response_finished(run)
    await session.emit({"type": "response.done", "response": body})
