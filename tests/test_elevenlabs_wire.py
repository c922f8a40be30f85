"""ElevenLabs wire pieces without sockets: messages, the interruption gate, tool definitions."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from caller_engine.realtime.elevenlabs import wire
from caller_engine.realtime.elevenlabs.agent_tools import SchemaError, client_tool, client_tools
from caller_engine.realtime.elevenlabs.gate import InterruptionGate, b64_slices, slice_bytes
from caller_engine.realtime.elevenlabs.urls import public_url, websocket_base
from caller_engine.sim.elevenlabs.tools import check_tool_request
from caller_engine.sim.elevenlabs.validation import check_initiation, check_message
from caller_engine.tools.end_call import END_CALL
from caller_engine.tools.registry import Tool


def test_initiation_is_sent_even_when_empty() -> None:
    assert wire.initiation(wire.Overrides()) == {"type": "conversation_initiation_client_data"}


def test_initiation_maps_every_override() -> None:
    overrides = wire.Overrides(
        prompt="Be brief.",
        first_message="Hi {{name}}",
        voice_id="v1",
        dynamic_variables=wire.dynamic_variables({"name": "Ann", "n": 3, "tags": ["a"]}),
    )
    msg = wire.initiation(overrides)
    assert msg == {
        "type": "conversation_initiation_client_data",
        "conversation_config_override": {
            "agent": {"prompt": {"prompt": "Be brief."}, "first_message": "Hi {{name}}"},
            "tts": {"voice_id": "v1"},
        },
        "dynamic_variables": {"name": "Ann", "n": 3, "tags": '["a"]'},
    }
    assert check_initiation(msg) is None  # ElevenLabs' own type accepts it
    assert overrides.override_paths == [
        "agent.prompt.prompt",
        "agent.first_message",
        "tts.voice_id",
    ]


def test_dynamic_variables_skip_reserved_and_null() -> None:
    assert wire.dynamic_variables({"system__x": 1, "a": None, "b": True}) == {"b": True}


def test_client_messages_pass_the_emulator_checks() -> None:
    payload = base64.b64encode(b"\xff" * 160).decode()
    audio = orjson.loads(wire.audio_chunk(payload))
    assert audio == {"user_audio_chunk": payload}
    for msg in (
        wire.pong(7),
        wire.tool_result("t1", "{}", is_error=False),
        wire.contextual_update("x"),
        wire.user_message("hi"),
    ):
        assert check_message(msg) is None, msg


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ulaw_8000", wire.AudioFormat("ulaw", 8000)),
        ("pcm_16000", wire.AudioFormat("pcm", 16000)),
        ("pcm_44100", wire.AudioFormat("pcm", 44100)),
        ("ulaw_16000", None),
        ("mp3_44100_128", None),
        ("opus_48000", None),
        ("pcm", None),
    ],
)
def test_audio_formats(name: str, expected: wire.AudioFormat | None) -> None:
    assert wire.audio_format(name) == expected


def frame(msg: dict[str, Any]) -> bytes:
    return orjson.dumps(msg)


def test_parse_each_wrapper_key() -> None:
    assert wire.parse(
        frame({"type": "audio", "audio_event": {"audio_base_64": "AAA=", "event_id": 3}})
    ) == wire.Audio("AAA=", 3)
    assert wire.parse(
        frame({"type": "ping", "ping_event": {"event_id": 9, "ping_ms": None}})
    ) == wire.Ping(9)
    assert wire.parse(
        frame(
            {
                "type": "user_transcript",
                "user_transcription_event": {"user_transcript": "hi", "event_id": 2},
            }
        )
    ) == wire.UserTranscript("hi", 2)
    assert wire.parse(
        frame(
            {
                "type": "agent_response",
                "agent_response_event": {"agent_response": "yo", "event_id": 1},
            }
        )
    ) == wire.AgentResponse("yo", 1)
    assert wire.parse(
        frame({"type": "interruption", "interruption_event": {"event_id": 4}})
    ) == wire.Interruption(4)
    correction = {
        "original_agent_response": "a b c",
        "corrected_agent_response": "a",
        "event_id": 1,
    }
    assert wire.parse(
        frame({"type": "agent_response_correction", "agent_response_correction_event": correction})
    ) == wire.Correction("a b c", "a", 1)
    call = {"tool_name": "t", "tool_call_id": "c1", "parameters": {"x": 1}, "event_id": 5}
    assert wire.parse(
        frame({"type": "client_tool_call", "client_tool_call": call})
    ) == wire.ToolCall("t", "c1", {"x": 1}, 5)
    meta = {
        "conversation_id": "conv_1",
        "agent_output_audio_format": "ulaw_8000",
        "user_input_audio_format": "ulaw_8000",
    }
    assert wire.parse(
        frame(
            {
                "type": "conversation_initiation_metadata",
                "conversation_initiation_metadata_event": meta,
            }
        )
    ) == wire.Metadata("conv_1", "ulaw_8000", "ulaw_8000")
    assert wire.parse(frame({"type": "vad_score", "vad_score_event": {"vad_score": 0.1}})) is None


def test_parse_errors_wrapped_and_flat() -> None:
    wrapped = wire.parse(
        frame(
            {
                "type": "error",
                "error_event": {"code": 1008, "message": "no", "error_type": "override_error"},
            }
        )
    )
    assert wrapped == wire.ServerError(1008, "no", "override_error")
    flat = wire.parse(frame({"type": "error", "message": "This request exceeds your quota limit."}))
    assert isinstance(flat, wire.ServerError) and flat.quota and flat.code is None


def test_parse_refuses_malformed_frames() -> None:
    with pytest.raises(KeyError):
        wire.parse(frame({"type": "audio", "audio": "AAA="}))
    with pytest.raises(orjson.JSONDecodeError):
        wire.parse(b"not json")


def test_gate_drops_older_keeps_equal_and_newer() -> None:
    gate = InterruptionGate()
    assert gate.admits(1)
    assert gate.interrupted(4)
    assert not gate.admits(3)
    assert gate.admits(4)  # the reply after an interruption may carry its id
    assert gate.admits(5)
    assert not gate.interrupted(4)  # a repeat changes nothing
    assert not gate.interrupted(2)  # nor does an older one
    assert gate.admits(4)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 160, 1599, 1600, 1601, 20000])
def test_b64_slices_are_valid_and_rejoin(size: int) -> None:
    raw = bytes(range(256)) * (size // 256 + 1)
    raw = raw[:size]
    payload = base64.b64encode(raw).decode()
    pieces = b64_slices(payload, 1600)
    assert b"".join(base64.b64decode(p, validate=True) for p in pieces) == raw
    assert all(len(base64.b64decode(p)) == 1602 for p in pieces[:-1])  # 534 3-byte groups
    assert 0 < len(base64.b64decode(pieces[-1])) <= 1602 or size == 0


def test_slices_are_whole_frames_reaching_the_mark_interval() -> None:
    assert slice_bytes(1600) == 1920  # 240 ms: 12 frames of 20 ms, 640 base64 groups
    assert slice_bytes(160) == 480
    assert slice_bytes(0) == 480
    assert all(slice_bytes(n) % 160 == 0 and slice_bytes(n) % 3 == 0 for n in range(0, 9000, 7))


def test_urls() -> None:
    assert websocket_base("https://api.elevenlabs.io/") == "wss://api.elevenlabs.io"
    assert websocket_base("http://127.0.0.1:9000") == "ws://127.0.0.1:9000"
    assert (
        public_url("https://api.eu.residency.elevenlabs.io", "agent_1")
        == "wss://api.eu.residency.elevenlabs.io/v1/convai/conversation?agent_id=agent_1"
    )


def test_client_tool_definitions_from_the_dispatch_table() -> None:
    from caller_engine.tools.calendar import MeetingArgs

    async def handler(args: Any, ctx: Any) -> dict[str, Any]:
        return {}

    tool = Tool("schedule_meeting", "Book it.", MeetingArgs, handler, timeout=10.0)
    config = client_tool(tool)
    assert config["type"] == "client" and config["expects_response"] is True
    assert config["response_timeout_secs"] == 12
    params = config["parameters"]
    assert params["required"] == ["date", "time", "name"]
    assert params["properties"]["phone"] == {
        "type": "string",
        "description": "Contact phone; defaults to the number on this call.",
    }
    assert check_tool_request({"tool_config": config}) == []  # ElevenLabs' own type accepts it
    assert [c["name"] for c in client_tools([tool, END_CALL])] == ["schedule_meeting"]


def test_unsupported_schemas_are_named() -> None:
    from pydantic import BaseModel

    class Union(BaseModel):
        x: int | str

    async def handler(args: Any, ctx: Any) -> dict[str, Any]:
        return {}

    with pytest.raises(SchemaError):
        client_tool(Tool("u", "u", Union, handler))
