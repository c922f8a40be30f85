"""The records of calls just placed, kept for their start: taken once, forgotten, expired."""

from __future__ import annotations

from caller_engine.calls.models import AgentOverrides, CallRecord
from caller_engine.calls.placed import PlacedCalls


def _record(callback_id: str) -> CallRecord:
    return CallRecord(
        callback_id=callback_id,
        to="+15551234567",
        record=False,
        agent=AgentOverrides(instructions=f"Agent of {callback_id}."),
    )


def test_a_placed_call_is_taken_once() -> None:
    placed = PlacedCalls()
    placed.add(_record("cb-1"))
    record = placed.take("cb-1")
    assert record is not None and record.agent.instructions == "Agent of cb-1."
    assert placed.take("cb-1") is None and placed.take("cb-unknown") is None


def test_a_call_whose_start_must_read_the_database_is_forgotten() -> None:
    placed = PlacedCalls()
    placed.add(_record("cb-amd"))
    placed.forget("cb-amd")
    assert placed.take("cb-amd") is None


def test_records_not_taken_expire_and_leave() -> None:
    now = [0.0]
    placed = PlacedCalls(ttl=60, clock=lambda: now[0])
    placed.add(_record("cb-old"))
    now[0] = 30.0
    placed.add(_record("cb-new"))
    now[0] = 61.0
    assert placed.take("cb-old") is None  # expired, though still held
    placed.add(_record("cb-newer"))  # adding drops what expired
    now[0] = 89.0
    placed.add(_record("cb-last"))
    assert len(placed) == 3  # cb-new, cb-newer, cb-last
    now[0] = 91.0
    placed.add(_record("cb-after"))
    assert len(placed) == 3 and placed.take("cb-new") is None
    assert placed.take("cb-newer") is not None
