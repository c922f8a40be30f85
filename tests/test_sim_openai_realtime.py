from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import orjson
import pytest
from openai.types.realtime import RealtimeServerEvent
from pydantic import Field, TypeAdapter
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from caller_engine.audio import mulaw
from caller_engine.sim.openai.realtime import (
    EmulatedRealtimeSession,
    RealtimeEmulator,
    RealtimeScript,
    ScriptedResponse,
    check_client_event,
)
from caller_engine.sim.openai.realtime.vad import VadSettings, VoiceActivityDetector
from caller_engine.sim.openai.realtime.validation import unknown_parameters
from caller_engine.sim.server import LoopbackServer

SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(
    Annotated[RealtimeServerEvent, Field(discriminator="type")]
)
# The live server's session object carries these three beyond the SDK's request model.
SESSION_EXTRAS = {"session.object", "session.id", "session.expires_at"}

PCMU_SESSION: dict[str, Any] = {
    "type": "realtime",
    "instructions": "Be brief.",
    "output_modalities": ["audio"],
    "audio": {
        "input": {
            "format": {"type": "audio/pcmu"},
            "transcription": {"model": "gpt-4o-mini-transcribe"},
            "turn_detection": {
                "type": "server_vad",
                "silence_duration_ms": 300,
                "prefix_padding_ms": 100,
                "interrupt_response": True,
                "create_response": True,
            },
        },
        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
    },
}


class Client:
    """A realtime client over the `websockets` library, reading server events in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(event).decode())

    async def recv(self) -> dict[str, Any]:
        async with asyncio.timeout(3):
            event: dict[str, Any] = orjson.loads(await self.ws.recv())
        self.seen.append(event)
        return event

    async def until(self, type: str) -> list[dict[str, Any]]:
        """Events up to and including the next one of `type`."""
        events = []
        while True:
            event = await self.recv()
            events.append(event)
            if event["type"] == type:
                return events

    async def drain(self) -> None:
        """Read until the connection closes (raises ConnectionClosed)."""
        while True:
            await self.recv()

    async def append(self, ulaw: bytes, frame: int = 160) -> None:
        for at in range(0, len(ulaw), frame):
            chunk = base64.b64encode(ulaw[at : at + frame]).decode()
            await self.send({"type": "input_audio_buffer.append", "audio": chunk})

    async def configure(self, session: dict[str, Any] | None = None) -> dict[str, Any]:
        await self.send({"type": "session.update", "session": session or PCMU_SESSION})
        return (await self.until("session.updated"))[-1]


Connect = Callable[..., Any]


@pytest.fixture
async def realtime() -> AsyncIterator[tuple[RealtimeEmulator, LoopbackServer]]:
    emulator = RealtimeEmulator()
    server = LoopbackServer(emulator.app())
    await server.start()
    yield emulator, server
    await server.stop()


def url(server: LoopbackServer, model: str | None = "gpt-realtime") -> str:
    query = f"?model={model}" if model else ""
    return f"{server.ws_url}/v1/realtime{query}"


async def open_client(
    server: LoopbackServer,
    headers: dict[str, str] | None = None,
    model: str | None = "gpt-realtime",
) -> Client:
    ws = await connect(
        url(server, model), additional_headers=headers or {"Authorization": "Bearer sk-test"}
    )
    return Client(ws)


async def connected(
    realtime: tuple[RealtimeEmulator, LoopbackServer], script: RealtimeScript | None = None
) -> tuple[Client, EmulatedRealtimeSession]:
    emulator, server = realtime
    emulator.script_factory = (lambda: script) if script else None
    client = await open_client(server)
    assert (await client.recv())["type"] == "session.created"
    await client.configure()
    return client, emulator.sessions[-1]


def assert_exact_server_shapes(events: list[dict[str, Any]]) -> None:
    for event in events:
        model = SERVER_EVENT.validate_python(event)
        extras = set(unknown_parameters(model)) - SESSION_EXTRAS
        assert not extras, (event["type"], extras)


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


# -- responses -----------------------------------------------------------------------------


async def test_greeting_streams_audio_transcript_in_ga_order(realtime: Any) -> None:
    greeting = mulaw.tone(450, freq=300.0)
    script = RealtimeScript(responses=[ScriptedResponse(text="Hi, this is Ana.", audio=greeting)])
    client, session = await connected(realtime, script)
    assert session.session["audio"]["output"]["format"] == {"type": "audio/pcmu"}

    await client.send({"type": "response.create", "response": {"instructions": "Greet."}})
    events = await client.until("response.done")

    kinds = [kind for kind in types(events) if not kind.endswith(".delta")]
    assert kinds == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
    ]
    deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
    assert [len(base64.b64decode(e["delta"])) for e in deltas] == [800, 800, 800, 800, 400]
    assert b"".join(base64.b64decode(e["delta"]) for e in deltas) == greeting
    assert bytes(session.output_audio) == greeting
    pieces = [e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta"]
    assert "".join(pieces) == "Hi, this is Ana."
    done = events[-1]["response"]
    assert done["status"] == "completed"
    assert done["output"][0]["content"] == [
        {"type": "output_audio", "transcript": "Hi, this is Ana."}
    ]
    assert done["usage"]["output_tokens"] > 0
    assert session.response_requests == [{"instructions": "Greet."}]
    assert_exact_server_shapes(session.sent)
    assert session.violations == []


async def test_default_audio_is_a_tone_and_text_mode_streams_text(realtime: Any) -> None:
    script = RealtimeScript(responses=[ScriptedResponse(text="One.", audio_ms=200)])
    client, session = await connected(realtime, script)
    await client.send({"type": "response.create"})
    await client.until("response.done")
    assert len(session.output_audio) == 1600
    assert mulaw.frame_energy(bytes(session.output_audio)) > 1000

    await client.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
    events = await client.until("response.done")
    assert "response.output_audio.delta" not in types(events)
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == (
        "Okay."
    )
    assert_exact_server_shapes(session.sent)


async def test_tool_call_then_function_output_then_next_response(realtime: Any) -> None:
    script = RealtimeScript(
        responses=[
            ScriptedResponse(tool_calls=[("check_slots", {"day": "tuesday"})]),
            ScriptedResponse(text="Tuesday at ten works."),
        ]
    )
    client, session = await connected(realtime, script)
    await client.send({"type": "response.create"})
    events = await client.until("response.done")
    assert "response.content_part.added" not in types(events)  # a call without a message
    args_done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert args_done["name"] == "check_slots"
    assert orjson.loads(args_done["arguments"]) == {"day": "tuesday"}
    pieces = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert "".join(pieces) == args_done["arguments"]
    call_item = events[-1]["response"]["output"][0]
    assert call_item["type"] == "function_call"
    assert call_item["call_id"] == args_done["call_id"]
    assert call_item["id"] == args_done["item_id"]

    await client.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "call_unknown", "output": "{}"},
        }
    )
    error = (await client.until("error"))[-1]["error"]
    assert error["param"] == "item.call_id"

    output = {"type": "function_call_output", "call_id": args_done["call_id"], "output": '{"ok":1}'}
    await client.send({"type": "conversation.item.create", "item": output})
    added = (await client.until("conversation.item.done"))[0]
    assert added["type"] == "conversation.item.added"
    assert added["previous_item_id"] == call_item["id"]
    await client.send({"type": "response.create"})
    events = await client.until("response.done")
    transcript = next(e for e in events if e["type"] == "response.output_audio_transcript.done")
    assert transcript["transcript"] == "Tuesday at ten works."
    assert session.function_call_outputs == [
        {"call_id": args_done["call_id"], "output": '{"ok":1}'}
    ]
    assert_exact_server_shapes(session.sent)
    assert len(session.violations) == 1  # the unknown call_id


# -- errors --------------------------------------------------------------------------------


async def test_second_create_and_idle_cancel_answer_the_server_errors(realtime: Any) -> None:
    emulator, _ = realtime
    emulator.delta_interval = 0.01
    client, session = await connected(realtime)
    await client.send({"type": "response.create"})
    await client.send({"type": "response.create", "event_id": "evt_second"})
    error = (await client.until("error"))[-1]["error"]
    assert error["code"] == "conversation_already_has_active_response"
    assert error["event_id"] == "evt_second"
    assert session.events("response.created")[0]["response"]["id"] in error["message"]
    await client.until("response.done")

    await client.send({"type": "response.cancel"})
    error = (await client.until("error"))[-1]["error"]
    assert error == {
        "type": "invalid_request_error",
        "code": "response_cancel_not_active",
        "message": "Cancellation failed: no active response found",
        "param": None,
        "event_id": None,
    }
    assert len(session.violations) == 2
    assert all(v.startswith("response.") for v in session.violations)


async def test_a_response_is_over_once_its_done_is_written_even_while_the_write_waits(
    realtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client may answer response.done with response.create at once: the live server
    accepts it. The emulator must too when writing response.done waits for a full socket."""
    client, session = await connected(realtime)
    send_str = session._ws.send_str
    release = asyncio.Event()

    async def backed_up(data: str, compress: int | None = None) -> None:
        await send_str(data)
        if '"response.done"' in data:
            await release.wait()  # as a write waits for a full socket to drain

    monkeypatch.setattr(session._ws, "send_str", backed_up)
    await client.send({"type": "response.create"})
    await client.until("response.done")
    await client.send({"type": "response.create", "event_id": "evt_next"})
    async with asyncio.timeout(3):
        while len(session.response_requests) < 2:
            await asyncio.sleep(0.005)
    release.set()
    events = await client.until("response.done")
    assert "error" not in types(events)
    assert "response.created" in types(events)
    assert session.violations == []


async def test_client_cancel_ends_the_response_with_no_more_deltas(realtime: Any) -> None:
    emulator, _ = realtime
    emulator.delta_interval = 0.5  # the stream waits between deltas; a cancel wakes it
    script = RealtimeScript(responses=[ScriptedResponse(text="A long answer.", audio_ms=3000)])
    client, session = await connected(realtime, script)
    await client.send({"type": "response.create"})
    await client.until("response.output_audio.delta")
    await client.send({"type": "response.cancel"})
    after_cancel = await client.until("response.done")
    assert "response.output_audio.delta" not in types(after_cancel)
    assert types(after_cancel)[:2] == [
        "response.output_audio.done",
        "response.output_audio_transcript.done",
    ]
    done = after_cancel[-1]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert done["output"][0]["status"] == "incomplete"
    assert len(session.output_audio) == 800  # one 100 ms chunk went out
    emulator.delta_interval = 0.0
    await client.send({"type": "response.create"})  # nothing is active any more
    await client.until("response.done")
    assert_exact_server_shapes(session.sent)
    assert session.violations == []


async def test_truncate_bounds_and_wrong_items(realtime: Any) -> None:
    script = RealtimeScript(responses=[ScriptedResponse(text="Hello.", audio_ms=500)])
    client, session = await connected(realtime, script)
    await client.send({"type": "response.create"})
    item_id = (await client.until("response.done"))[-1]["response"]["output"][0]["id"]

    truncate = {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0}
    await client.send({**truncate, "audio_end_ms": 600})
    error = (await client.until("error"))[-1]["error"]
    assert error["code"] == "invalid_value"
    assert "Audio content of 500ms is already shorter than 600ms" in error["message"]

    await client.send({**truncate, "item_id": "item_nope", "audio_end_ms": 10})
    assert (await client.until("error"))[-1]["error"]["code"] == "item_not_found"

    await client.send({**truncate, "audio_end_ms": 320})
    truncated = (await client.until("conversation.item.truncated"))[-1]
    assert truncated["audio_end_ms"] == 320
    assert session.truncations == [{"item_id": item_id, "audio_end_ms": 320, "audio_sent_ms": 500}]
    assert session.items[item_id].item["content"][0]["transcript"] == ""

    await client.send(
        {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0}
    )
    missing = (await client.until("error"))[-1]["error"]
    assert missing["code"] == "missing_required_parameter"
    assert missing["param"] == "audio_end_ms"
    assert len(session.violations) == 3


async def test_truncate_of_a_user_item_is_refused(realtime: Any) -> None:
    client, session = await connected(realtime)
    await session.user_speaks("Hello?")
    user_item = (await client.until("conversation.item.done"))[-1]["item"]
    await client.until("response.done")
    await client.send(
        {
            "type": "conversation.item.truncate",
            "item_id": user_item["id"],
            "content_index": 0,
            "audio_end_ms": 0,
        }
    )
    error = (await client.until("error"))[-1]["error"]
    assert error["message"] == "Only model output audio messages can be truncated"


async def test_voice_and_model_are_locked(realtime: Any) -> None:
    client, session = await connected(realtime)
    marin = {"type": "realtime", "audio": {"output": {"voice": "cedar"}}}
    await client.send({"type": "session.update", "session": marin})
    assert (await client.until("session.updated"))[-1]["session"]["audio"]["output"][
        "voice"
    ] == "cedar"
    await client.send({"type": "response.create"})
    await client.until("response.done")
    await client.send(
        {"type": "session.update", "session": {**marin, "audio": {"output": {"voice": "ash"}}}}
    )
    assert (await client.until("error"))[-1]["error"]["code"] == "cannot_update_voice"
    await client.send({"type": "session.update", "session": {"type": "realtime", "model": "x"}})
    assert (await client.until("error"))[-1]["error"]["param"] == "session.model"
    assert session.session["audio"]["output"]["voice"] == "cedar"


async def test_bad_audio_and_short_commit_are_refused(realtime: Any) -> None:
    client, session = await connected(realtime)
    await client.send({"type": "input_audio_buffer.append", "audio": "not base64!"})
    assert (await client.until("error"))[-1]["error"]["param"] == "audio"
    await client.append(mulaw.silence(60))
    await client.send({"type": "input_audio_buffer.commit"})
    error = (await client.until("error"))[-1]["error"]
    assert error["code"] == "input_audio_buffer_commit_empty"
    assert "60.00ms" in error["message"]
    await client.send({"type": "no.such.event"})
    error = (await client.until("error"))[-1]["error"]
    assert (error["code"], error["param"]) == ("invalid_value", "type")
    assert len(session.violations) == 3


async def test_beta_session_shape_is_rejected_and_recorded(realtime: Any) -> None:
    client, session = await connected(realtime)
    beta = {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "input_audio_format": "g711_ulaw",
            "output_audio_format": "g711_ulaw",
            "modalities": ["audio", "text"],
            "voice": "alloy",
            "turn_detection": {"type": "server_vad"},
        },
    }
    before = dict(session.session)
    await client.send(beta)
    error = (await client.until("error"))[-1]["error"]
    assert error["code"] == "unknown_parameter"
    assert error["message"] == f"Unknown parameter: '{error['param']}'."
    assert session.session == before
    text = "\n".join(session.violations)
    for name in ("input_audio_format", "output_audio_format", "modalities", "voice"):
        assert f"session.update: unknown parameter 'session.{name}' (beta-shape leftover)" in text
    assert "beta audio format name 'g711_ulaw'" in text

    await client.send({"type": "session.update", "session": {"instructions": "x"}})
    error = (await client.until("error"))[-1]["error"]
    assert error["message"] == "Missing required parameter: 'session.type'."
    assert "'session' has no 'type'" in session.violations[-2]


def test_check_client_event_accepts_ga_and_names_nested_problems() -> None:
    assert check_client_event({"type": "session.update", "session": PCMU_SESSION}).ok
    assert check_client_event({"type": "input_audio_buffer.append", "audio": "AAAA"}).ok
    nested = {
        "type": "session.update",
        "session": {"type": "realtime", "audio": {"input": {"format": "g711_ulaw"}}},
    }
    result = check_client_event(nested)
    assert result.rejection is not None
    assert result.rejection.param == "session.audio.input.format"
    extra = check_client_event(
        {"type": "response.create", "response": {"modalities": ["audio"], "voice": "x"}}
    )
    assert extra.rejection is not None and extra.rejection.code == "unknown_parameter"
    assert len(extra.violations) == 2


# -- turn detection ------------------------------------------------------------------------


async def test_vad_turn_from_a_tone_after_silence(realtime: Any) -> None:
    emulator, _ = realtime
    heard: list[tuple[int, float]] = []
    emulator.on_input_audio = lambda _session, data, at: heard.append((len(data), at))
    script = RealtimeScript(
        responses=[ScriptedResponse(text="Sure.")], user_transcripts=["I need an appointment"]
    )
    client, session = await connected(realtime, script)
    audio = mulaw.silence(400) + mulaw.tone(600) + mulaw.silence(400)
    await client.append(audio)
    events = await client.until("response.done")
    assert types(events)[:7] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
    ]
    started, stopped, committed = events[0], events[1], events[2]
    assert started["audio_start_ms"] == 400 - 100  # prefix padding
    assert stopped["audio_end_ms"] == 400 + 600 + 300  # silence_duration_ms of quiet
    assert started["item_id"] == stopped["item_id"] == committed["item_id"]
    assert events[6]["transcript"] == "I need an appointment"
    assert events[7]["type"] == "response.created"
    assert bytes(session.input_audio) == audio
    assert len(heard) == len(audio) // 160
    assert [at for _, at in heard] == sorted(at for _, at in heard)
    assert_exact_server_shapes(session.sent)


async def test_barge_in_cancels_when_interrupt_response_is_on(realtime: Any) -> None:
    emulator, _ = realtime
    emulator.delta_interval = 0.01
    script = RealtimeScript(responses=[ScriptedResponse(text="Long greeting.", audio_ms=4000)])
    client, session = await connected(realtime, script)
    await client.send({"type": "response.create"})
    await client.until("response.output_audio.delta")
    await client.append(mulaw.tone(100))
    events = await client.until("response.done")
    kinds = types(events)
    assert "input_audio_buffer.speech_started" in kinds
    after_start = kinds[kinds.index("input_audio_buffer.speech_started") :]
    assert "response.output_audio.delta" not in after_start
    done = events[-1]["response"]
    assert (done["status"], done["status_details"]["reason"]) == ("cancelled", "turn_detected")
    assert len(session.output_audio) < 4000 * 8
    assert_exact_server_shapes(session.sent)


async def test_without_interrupt_response_the_response_runs_until_client_cancel(
    realtime: Any,
) -> None:
    emulator, _ = realtime
    emulator.delta_interval = 0.01
    script = RealtimeScript(responses=[ScriptedResponse(text="Long.", audio_ms=4000)])
    client, session = await connected(realtime, script)
    no_interrupt = {
        "type": "realtime",
        "audio": {"input": {"turn_detection": {"type": "server_vad", "interrupt_response": False}}},
    }
    updated = await client.configure(no_interrupt)
    detection = updated["session"]["audio"]["input"]["turn_detection"]
    assert detection["silence_duration_ms"] == 300  # merged onto the earlier setting
    await client.send({"type": "response.create"})
    await client.until("response.output_audio.delta")
    await session.speech_started()
    await client.until("input_audio_buffer.speech_started")
    await client.until("response.output_audio.delta")  # still streaming
    await client.send({"type": "response.cancel"})
    done = (await client.until("response.done"))[-1]["response"]
    assert done["status_details"]["reason"] == "client_cancelled"


async def test_late_deltas_slip_out_before_the_cancelled_done(realtime: Any) -> None:
    emulator, _ = realtime
    emulator.delta_interval = 0.5
    emulator.late_deltas = 2
    script = RealtimeScript(responses=[ScriptedResponse(text="Long.", audio_ms=4000)])
    client, session = await connected(realtime, script)
    await client.send({"type": "response.create"})
    await client.until("response.output_audio.delta")
    await client.send({"type": "response.cancel"})
    after_cancel = await client.until("response.done")
    assert types(after_cancel)[:3] == [
        "response.output_audio.delta",
        "response.output_audio.delta",
        "response.output_audio.done",
    ]
    assert len(session.output_audio) == 3 * 800


async def test_user_speaks_without_turn_detection_commits_only(realtime: Any) -> None:
    client, session = await connected(realtime)
    await client.configure({"type": "realtime", "audio": {"input": {"turn_detection": None}}})
    await session.user_speaks("Just a note")
    events = await client.until("conversation.item.input_audio_transcription.completed")
    assert types(events)[0] == "input_audio_buffer.committed"
    assert events[-1]["transcript"] == "Just a note"
    await client.append(mulaw.tone(500))  # no VAD: no speech events, no response
    await client.send({"type": "input_audio_buffer.commit"})
    assert (await client.recv())["type"] == "input_audio_buffer.committed"
    assert session.events("response.created") == []


def test_vad_detector_positions() -> None:
    vad = VoiceActivityDetector(VadSettings(400.0, prefix_padding_ms=300, silence_duration_ms=200))
    assert vad.feed(mulaw.silence(1000)) == []
    events = vad.feed(mulaw.tone(300) + mulaw.silence(100))
    assert [(e.kind, e.audio_ms) for e in events] == [("started", 700)]
    events = vad.feed(mulaw.silence(100))
    assert [(e.kind, e.audio_ms) for e in events] == [("stopped", 1500)]
    vad.mark_buffer_start()
    events = vad.feed(mulaw.tone(40)[:-1])  # partial frame waits for the rest
    assert events == [] and vad.position_ms == 1520
    started = vad.feed(b"\xff")  # completes the second loud frame
    assert [(e.kind, e.audio_ms) for e in started] == [("started", 1500)]  # not before the buffer


def test_vad_threshold_follows_turn_detection() -> None:
    low = VadSettings.from_turn_detection({"type": "server_vad", "threshold": 0.25}, 400.0)
    assert low is not None and low.threshold == 200.0
    semantic = VadSettings.from_turn_detection({"type": "semantic_vad", "eagerness": "high"}, 1)
    assert semantic is not None and semantic.silence_duration_ms == 300
    assert VadSettings.from_turn_detection(None, 400.0) is None
    quiet = mulaw.tone(200, amplitude=300)
    vad = VoiceActivityDetector(VadSettings(400.0))
    assert vad.feed(quiet) == []


# -- connection ----------------------------------------------------------------------------


async def test_handshake_records_model_and_headers(realtime: Any) -> None:
    emulator, server = realtime
    client = await open_client(server, model="gpt-realtime-mini")
    created = await client.recv()
    assert created["session"]["model"] == "gpt-realtime-mini"
    assert created["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    session = await emulator.wait_for_session(0)
    assert session.model == "gpt-realtime-mini"
    assert session.headers["Authorization"] == "Bearer sk-test"
    assert_exact_server_shapes([created])
    await client.ws.close()
    await asyncio.wait_for(session.closed.wait(), 2)


async def test_bad_key_is_an_error_event_then_close_3000(realtime: Any) -> None:
    emulator, server = realtime
    client = await open_client(server, headers={"Authorization": "Bearer sk-wrong-key-123"})
    error = (await client.recv())["error"]
    assert error["code"] == "invalid_api_key"
    assert "sk-w" in error["message"] and "sk-wrong-key-123" not in error["message"]
    with pytest.raises(ConnectionClosed) as closed:
        await client.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 3000
    assert closed.value.rcvd.reason == "invalid_request_error.invalid_api_key"
    assert emulator.sessions[0].events("session.created") == []


async def test_configured_auth_header_and_beta_header(realtime: Any) -> None:
    emulator, server = realtime
    emulator.auth_header = "api-key"
    client = await open_client(server, headers={"api-key": "sk-test"})
    assert (await client.recv())["type"] == "session.created"
    await client.ws.close()

    client = await open_client(server, headers={"api-key": "sk-test", "OpenAI-Beta": "realtime=v1"})
    assert (await client.recv())["error"]["code"] == "beta_api_shape_disabled"
    with pytest.raises(ConnectionClosed) as closed:
        await client.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
    assert any("OpenAI-Beta" in v for v in emulator.violations)


async def test_missing_model_closes_with_4000(realtime: Any) -> None:
    _, server = realtime
    client = await open_client(server, model=None)
    assert (await client.recv())["error"]["code"] == "missing_model"
    with pytest.raises(ConnectionClosed) as closed:
        await client.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000


async def test_fatal_on_connect_insufficient_quota(realtime: Any) -> None:
    emulator, server = realtime
    emulator.fatal_on_connect = "insufficient_quota"
    for _ in range(2):
        client = await open_client(server)
        error = (await client.recv())["error"]
        assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.reason == "insufficient_quota.insufficient_quota"
    assert emulator.connection_attempts == 2


async def test_reject_connections_then_accept(realtime: Any) -> None:
    emulator, server = realtime
    emulator.reject_connections = 2
    for _ in range(2):
        with pytest.raises(InvalidStatus) as rejected:
            await open_client(server)
        assert rejected.value.response.status_code == 503
    client = await open_client(server)
    assert (await client.recv())["type"] == "session.created"
    assert emulator.connection_attempts == 3
    assert len(emulator.sessions) == 1
    await client.ws.close()


async def test_drop_closes_abruptly_and_stops_the_stream(realtime: Any) -> None:
    emulator, _ = realtime
    emulator.delta_interval = 0.01
    script = RealtimeScript(responses=[ScriptedResponse(text="Long.", audio_ms=5000)])
    client, session = await connected(realtime, script)
    await client.send({"type": "response.create"})
    await client.until("response.output_audio.delta")
    await session.drop()
    with pytest.raises(ConnectionClosed) as closed:
        await client.drain()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    await asyncio.wait_for(session.closed.wait(), 2)
    assert all(run.task is not None and run.task.done() for run in session.responses)


async def test_drop_without_code_aborts_the_connection(realtime: Any) -> None:
    client, session = await connected(realtime)
    await session.drop(code=None)
    with pytest.raises(ConnectionClosed) as closed:
        await client.recv()
    assert closed.value.rcvd is None  # no close frame: 1006 at the client
    await asyncio.wait_for(session.closed.wait(), 2)


async def test_items_can_be_created_retrieved_and_deleted(realtime: Any) -> None:
    client, session = await connected(realtime)
    text_item = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "Please call me Ana."}],
    }
    await client.send({"type": "conversation.item.create", "item": {**text_item, "id": "item_a"}})
    added = (await client.until("conversation.item.done"))[0]
    assert added["item"]["id"] == "item_a" and added["previous_item_id"] is None
    await client.send(
        {"type": "conversation.item.create", "item": text_item, "previous_item_id": "root"}
    )
    second = (await client.until("conversation.item.done"))[-1]
    assert session.order == [second["item"]["id"], "item_a"]
    await client.send({"type": "conversation.item.retrieve", "item_id": "item_a"})
    retrieved = (await client.until("conversation.item.retrieved"))[-1]
    assert retrieved["item"]["content"][0]["text"] == "Please call me Ana."
    await client.send({"type": "conversation.item.delete", "item_id": "item_a"})
    assert (await client.until("conversation.item.deleted"))[-1]["item_id"] == "item_a"
    await client.send({"type": "conversation.item.delete", "item_id": "item_a"})
    assert (await client.until("error"))[-1]["error"]["code"] == "item_not_found"
    await client.send({"type": "output_audio_buffer.clear"})
    assert "WebRTC" in (await client.until("error"))[-1]["error"]["message"]
    assert_exact_server_shapes(session.sent)
    assert len(session.violations) == 2


async def test_out_of_band_response_runs_beside_the_active_one(realtime: Any) -> None:
    emulator, _ = realtime
    emulator.delta_interval = 0.01
    script = RealtimeScript(
        responses=[ScriptedResponse(text="Talking.", audio_ms=2000), ScriptedResponse("Side.")]
    )
    client, session = await connected(realtime, script)
    await client.send({"type": "response.create"})
    await client.until("response.output_audio.delta")
    side = {"conversation": "none", "output_modalities": ["text"], "metadata": {"k": "v"}}
    await client.send({"type": "response.create", "response": side})
    created = await session.wait_for("response.created", count=2)
    assert created["response"]["conversation_id"] is None
    assert created["response"]["metadata"] == {"k": "v"}
    side_done = await session.wait_for("response.done")
    assert side_done["response"]["id"] == created["response"]["id"]
    assert session.active_response is not None  # the first one is still talking
    side_items = {e["item"]["id"] for e in session.events("response.output_item.added")}
    conversation_items = {e["item"]["id"] for e in session.events("conversation.item.added")}
    assert len(side_items - conversation_items) == 1
    await session.wait_for("response.done", count=2)
    assert session.violations == []
    with pytest.raises(TimeoutError):
        await session.wait_for("response.done", count=3, within=0.05)


async def test_audio_events_can_be_left_out_of_the_records(realtime: Any) -> None:
    emulator, _ = realtime
    emulator.keep_audio_events = False
    client, session = await connected(realtime)
    await client.append(mulaw.silence(100))
    await client.send({"type": "input_audio_buffer.append", "audio": 5})
    assert (await client.until("error"))[-1]["error"]["code"] == "invalid_type"
    await client.send({"type": "response.create"})
    await client.until("response.done")
    assert [e["type"] for e in session.received][-2:] == [
        "input_audio_buffer.append",  # the invalid one is kept
        "response.create",
    ]
    assert session.events("response.output_audio.delta") == []
    assert len(session.input_audio) == 800 and len(session.output_audio) == 3200
