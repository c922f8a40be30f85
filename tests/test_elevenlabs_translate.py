"""ElevenLabs messages → neutral events, without sockets: response parts, the interruption gate,
tool calls, corrections and idle pauses."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from caller_engine.audio.convert import PcmToCaller
from caller_engine.realtime.base import (
    AgentItem,
    AgentTranscript,
    AgentTranscriptCorrected,
    AudioDelta,
    FunctionCall,
    Interrupted,
    ProviderEvent,
    ResponseDone,
    ResponseStarted,
    UserItem,
    UserTranscript,
)
from caller_engine.realtime.elevenlabs import wire
from caller_engine.realtime.elevenlabs.session import _Translator

ULAW = base64.b64encode(b"\x7f" * 4800).decode()  # 600 ms


@dataclass
class FakeSession:
    conversation_id: str = "conv_1"
    slice_bytes: int = 1920
    stale_dropped: int = 0
    _from_pcm: PcmToCaller | None = None


def run(translator: _Translator, *messages: wire.ServerMessage) -> list[ProviderEvent]:
    out: list[ProviderEvent] = []
    for msg in messages:
        out += translator.translate(msg)
    return out


def kinds(events: list[ProviderEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_a_response_is_one_part_with_its_text_and_sliced_audio() -> None:
    t = _Translator(FakeSession())  # type: ignore[arg-type]
    events = run(t, wire.AgentResponse("Hello.", 1), wire.Audio(ULAW, 1))
    assert kinds(events) == [
        "ResponseStarted",
        "AgentItem",
        "AgentTranscript",
        "AudioDelta",
        "AudioDelta",
        "AudioDelta",
    ]
    audio = [e for e in events if isinstance(e, AudioDelta)]
    assert b"".join(base64.b64decode(a.payload) for a in audio) == b"\x7f" * 4800
    assert [len(base64.b64decode(a.payload)) for a in audio] == [1920, 1920, 960]
    assert {a.response_id for a in audio} == {"conv_1-1-1"}


def test_interruption_drops_older_ids_and_keeps_an_equal_id_reply() -> None:
    session = FakeSession()
    t = _Translator(session)  # type: ignore[arg-type]
    run(t, wire.Audio(ULAW, 1))
    cut = run(t, wire.Interruption(2))
    assert cut == [Interrupted("conv_1-1-1"), ResponseDone("conv_1-1-1", "cancelled")]
    assert run(t, wire.Audio(ULAW, 1)) == []  # stale chunk of the cut response
    assert session.stale_dropped == 1
    user = run(t, wire.UserTranscript("Wait.", 2))
    assert user == [UserItem("conv_1-user-2-1"), UserTranscript("conv_1-user-2-1", "Wait.")]
    reply = run(t, wire.Audio(ULAW, 2))  # same id as the interruption: kept
    assert reply[:2] == [ResponseStarted("conv_1-2-2"), AgentItem("conv_1-2-2", "conv_1-2-2")]
    assert len(reply) == 5
    assert run(t, wire.Interruption(2)) == []  # a repeated interruption changes nothing


def test_correction_names_the_cut_item() -> None:
    t = _Translator(FakeSession())  # type: ignore[arg-type]
    run(t, wire.AgentResponse("We have many openings.", 1), wire.Audio(ULAW, 1))
    run(t, wire.Interruption(2))
    events = run(t, wire.Correction("We have many openings.", "We have", 1))
    assert events == [AgentTranscriptCorrected("conv_1-1-1", "conv_1-1-1", "We have")]
    assert run(t, wire.Correction("x", "y", 9)) == []  # unknown response: nothing


def test_a_tool_call_ends_its_part_and_the_reply_after_it_is_a_new_item() -> None:
    t = _Translator(FakeSession())  # type: ignore[arg-type]
    first = run(t, wire.AgentResponse("Let me check.", 3))
    call = run(t, wire.ToolCall("lookup", "toolu_1", {"q": "x"}, 3))
    fc = FunctionCall("conv_1-3-1", "toolu_1", "lookup", '{"q":"x"}')
    assert call == [fc, ResponseDone("conv_1-3-1", "completed", (fc,))]
    after = run(t, wire.AgentResponse("All set.", 3))
    assert after[0] == ResponseStarted("conv_1-3-2")
    assert after[-1] == AgentTranscript("conv_1-3-2", "conv_1-3-2", "All set.")
    assert first[-1] == AgentTranscript("conv_1-3-1", "conv_1-3-1", "Let me check.")


def test_idle_pause_ends_the_part_and_more_audio_of_it_reopens_it() -> None:
    t = _Translator(FakeSession())  # type: ignore[arg-type]
    run(t, wire.Audio(ULAW, 1))
    assert t.open_with_audio
    assert t.pause() == [ResponseDone("conv_1-1-1", "completed")]
    again = run(t, wire.Audio(ULAW, 1))
    assert again[0] == ResponseStarted("conv_1-1-1")  # same item: one transcript entry
    assert not any(isinstance(e, AgentItem) for e in again)
    assert t.finish() == [ResponseDone("conv_1-1-1", "completed")]


def test_pcm_output_is_converted_and_its_tail_flushed() -> None:
    session = FakeSession(_from_pcm=PcmToCaller(16000))
    t = _Translator(session)  # type: ignore[arg-type]
    pcm = base64.b64encode(b"\x00\x10" * 16000).decode()  # 1 s at 16 kHz
    events = run(t, wire.Audio(pcm, 1))
    ends = t.finish()
    audio = [e for e in [*events, *ends] if isinstance(e, AudioDelta)]
    total = sum(len(base64.b64decode(a.payload)) for a in audio)
    assert abs(total - 8000) <= 16  # 1 s of μ-law at 8 kHz
    assert isinstance(ends[-1], ResponseDone)


def test_errors_become_provider_errors() -> None:
    t = _Translator(FakeSession())  # type: ignore[arg-type]
    [event] = run(t, wire.ServerError(1002, "This request exceeds your quota limit.", None))
    assert type(event).__name__ == "ProviderError"
    assert event.code == "quota_exceeded"  # type: ignore[union-attr]


def test_close_codes_map_to_the_call_outcome() -> None:
    from websockets.frames import Close

    from caller_engine.realtime.elevenlabs.session import closed_event

    ended = closed_event(Close(1000, ""), None, [])
    assert ended.ended and ended.by_tool == "end_call" and not ended.fatal
    max_duration = wire.ServerError(1000, "too long", "max_duration_exceeded")
    assert closed_event(Close(1000, ""), max_duration, []).by_tool is None
    for code in (1002, 1011):
        transient = closed_event(Close(code, "llm timeout"), None, [])
        assert not transient.fatal and not transient.ended  # reconnect
    quota = wire.ServerError(None, "This request exceeds your quota limit.", None)
    unavailable = closed_event(Close(1002, ""), quota, [])
    assert (unavailable.fatal, unavailable.code) == (True, "model_unavailable")
    override = wire.ServerError(1008, "Override for field 'x'", "override_error")
    refused = closed_event(Close(1008, ""), override, ["agent.first_message"])
    assert (refused.fatal, refused.code) == (True, "model_refused")
    assert "agent.first_message" in refused.reason and "Overrides" in refused.reason
    variable = wire.ServerError(1008, "missing", "missing_dynamic_variable")
    assert "agent.metadata" in closed_event(Close(1008, ""), variable, []).reason
    assert not closed_event(None, None, []).fatal  # no close frame: reconnect
