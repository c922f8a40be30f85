"""The frequency cap's arithmetic (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from caller_engine.guardrails.frequency import cap_reached_until
from caller_engine.guardrails.policy import Admission, CallRefused, admit, describe_seconds, iso_utc

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


def test_refusal_order_and_messages() -> None:
    hours = CallRefused("outside_calling_hours", "closed", next_allowed_at=NOW + DAY)
    capped = Admission(hours=None, max_calls=1, window=DAY)
    # The do-not-call list wins over everything: it never lifts by itself.
    listed = admit(Admission(hours=hours, max_calls=1), listed=True, dialed=[ago(1)], now=NOW)
    assert listed is not None and listed.reason == "do_not_call" and listed.http_status == 403
    assert listed.details() == {}
    # Then calling hours, then the cap.
    assert (
        admit(Admission(hours=hours, max_calls=1), listed=False, dialed=[ago(1)], now=NOW) is hours
    )
    cap = admit(capped, listed=False, dialed=[ago(1)], now=NOW)
    assert cap is not None and cap.reason == "frequency_cap" and cap.http_status == 429
    assert "1 time(s) in the last 24 h" in cap.message
    assert cap.details() == {"nextAllowedAt": iso_utc(ago(1) + DAY)}
    assert admit(capped, listed=False, dialed=[], now=NOW) is None
    # The time the cap lifts is moved into calling hours.
    later = Admission(max_calls=1, window=DAY, open_from=lambda at: at + timedelta(hours=3))
    moved = admit(later, listed=False, dialed=[ago(1)], now=NOW)
    assert moved is not None and moved.next_allowed_at == ago(1) + DAY + timedelta(hours=3)


def test_times_are_whole_seconds_rounded_up() -> None:
    assert iso_utc(datetime(2030, 1, 2, 12, 0, 0, 1, tzinfo=UTC)) == "2030-01-02T12:00:01Z"
    assert iso_utc(datetime(2030, 1, 2, 12, 0, tzinfo=UTC)) == "2030-01-02T12:00:00Z"
    assert describe_seconds(86_400) == "24 h" and describe_seconds(7 * 86_400) == "7 d"
    assert describe_seconds(1800) == "30 min" and describe_seconds(90) == "90 s"
