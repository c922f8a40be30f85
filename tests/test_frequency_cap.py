"""The frequency cap's arithmetic (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from caller_engine.guardrails.frequency import cap_reached_until

NOW = datetime(2030, 1, 2, 12, 0, tzinfo=UTC)
DAY = timedelta(hours=24)


def ago(hours: float) -> datetime:
    return NOW - timedelta(hours=hours)


def test_under_the_cap_is_allowed() -> None:
    assert cap_reached_until([], 3, DAY, NOW) is None
    assert cap_reached_until([ago(1), ago(2)], 3, DAY, NOW) is None


def test_calls_outside_the_window_do_not_count() -> None:
    assert cap_reached_until([ago(30), ago(25), ago(24), ago(2)], 3, DAY, NOW) is None


def test_at_the_cap_the_oldest_counted_call_sets_the_time() -> None:
    # Three calls in the last 24 h: the next is allowed when the one 20 h ago leaves.
    assert cap_reached_until([ago(1), ago(20), ago(5)], 3, DAY, NOW) == ago(20) + DAY
    # Five (a lower cap was set later): the count drops below 3 once the third newest leaves.
    calls = [ago(h) for h in (23, 22, 10, 3, 1)]
    assert cap_reached_until(calls, 3, DAY, NOW) == ago(10) + DAY


def test_zero_turns_the_cap_off() -> None:
    assert cap_reached_until([ago(1)] * 10, 0, DAY, NOW) is None


def test_a_cap_of_one() -> None:
    assert cap_reached_until([ago(0.5)], 1, timedelta(hours=1), NOW) == NOW + timedelta(minutes=30)
