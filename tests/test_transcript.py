"""Transcript assembly in conversation order."""

from __future__ import annotations

from caller_engine.calls.result import ToolCallRecord
from caller_engine.transcript.collector import TranscriptCollector, heard_part


def test_entries_follow_conversation_position_not_arrival() -> None:
    c = TranscriptCollector()
    c.agent_item("a1", 0.1)
    c.agent_text("a1", "Hello, this is the clinic.", 1.0)
    c.user_item("u1", 2.0)
    c.agent_item("a2", 3.0)
    c.agent_text("a2", "Sure, which day?", 3.5)
    c.user_text("u1", "I'd like to book.", 3.6)  # transcription arrives late
    result = c.finalize("CA1", "cb", 5.0)
    assert [e.role for e in result["entries"]] == ["agent", "user", "agent"]
    assert result["fullText"] == (
        "[Agent]: Hello, this is the clinic.\n[User]: I'd like to book.\n[Agent]: Sure, which day?"
    )
    assert result["callSid"] == "CA1" and result["duration"] == 5.0


def test_interrupted_agent_keeps_only_the_heard_part() -> None:
    c = TranscriptCollector()
    c.agent_item("a1", 0.0)
    c.agent_text("a1", "We have ten, eleven and noon available tomorrow.", 0.5)
    c.interrupted("a1", heard_ms=500, sent_ms=2000)
    [entry] = c.entries()
    assert entry.interrupted
    assert entry.text == "We have ten"
    assert "[interrupted]" in c.finalize(None, "cb", 1.0)["fullText"]


def test_heard_part_cuts_at_word_boundaries() -> None:
    assert heard_part("one two three", 1.0) == "one two three"
    assert heard_part("one two three", 0.0) == ""
    assert heard_part("one two three", 0.5) == "one"


def test_tool_calls_and_dtmf_are_recorded_and_replayable() -> None:
    c = TranscriptCollector()
    c.user_item("u1", 0.0)
    c.user_text("u1", "Book me in.", 0.5)
    record = ToolCallRecord(
        name="schedule_meeting",
        callId="c1",
        arguments={"date": "2026-11-23"},
        output={"status": "confirmed"},
        ok=True,
        durationMs=12.0,
        at=1.0,
    )
    c.tool(record)
    c.dtmf("5", 2.0)
    roles = [e.role for e in c.entries()]
    assert roles == ["user", "tool", "dtmf"]
    assert c.tool_calls == [record]
    history = c.history()
    assert [h.role for h in history] == ["user", "tool_call", "tool_output", "user"]
    assert history[1].call_id == "c1" and history[1].name == "schedule_meeting"
    assert "[User]: pressed 5" in c.finalize(None, "cb", 3.0)["fullText"]


def test_empty_user_turns_are_left_out() -> None:
    c = TranscriptCollector()
    c.user_item("u1", 0.0)
    assert c.entries() == []
