"""Calling-hours windows in the callee's local time: pure functions, no sockets."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from caller_engine.guardrails.hours import (
    CallingWindow,
    WindowError,
    inside,
    next_allowed,
    zone_intervals,
)
from caller_engine.guardrails.zones import zone_names

DEFAULT = CallingWindow.parse("08:00-21:00")
NY = ZoneInfo("America/New_York")
LA = ZoneInfo("America/Los_Angeles")
TOKYO = ZoneInfo("Asia/Tokyo")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_parse_hours_and_days() -> None:
    w = CallingWindow.parse("8:30-21:00", "Mon, tue,FRIDAY")
    assert (w.start, w.end, w.days) == (8.5 * 3600, 21 * 3600, frozenset({0, 1, 4}))
    assert CallingWindow.parse("00:00-24:00").always
    assert not CallingWindow.parse("00:00-24:00", "mon").always
    assert CallingWindow.parse("09:00-17:00", "").days == frozenset(range(7))
    for bad in ("8-21", "21:00-08:00", "08:00-08:00", "08:60-09:00", "00:00-24:30", "25:00-26:00"):
        with pytest.raises(WindowError):
            CallingWindow.parse(bad)
    with pytest.raises(WindowError):
        CallingWindow.parse("08:00-21:00", "mon,funday")


def test_inside_the_window_is_now() -> None:
    now = utc(2026, 6, 10, 16, 0, 0)  # 12:00 in New York
    assert next_allowed(now, [NY], DEFAULT) == now


def test_before_the_window_opens_the_same_local_morning() -> None:
    # 03:15 EDT → 08:00 EDT the same day.
    assert next_allowed(utc(2026, 6, 10, 7, 15), [NY], DEFAULT) == utc(2026, 6, 10, 12, 0)


def test_after_the_window_closes_across_local_midnight() -> None:
    # 21:00:00 EDT is already outside (the end is exclusive): next morning 08:00 EDT.
    assert next_allowed(utc(2026, 6, 11, 1, 0, 0), [NY], DEFAULT) == utc(2026, 6, 11, 12, 0)
    # 23:59 PDT on the 10th is 06:59 UTC on the 11th: still the 11th, 08:00 PDT.
    assert next_allowed(utc(2026, 6, 11, 6, 59), [LA], DEFAULT) == utc(2026, 6, 11, 15, 0)
    # 00:30 PDT on the 11th (07:30 UTC): the same local day, 08:00 PDT.
    assert next_allowed(utc(2026, 6, 11, 7, 30), [LA], DEFAULT) == utc(2026, 6, 11, 15, 0)
    # 20:59:59 PDT is inside.
    inside_now = utc(2026, 6, 11, 3, 59, 59)
    assert next_allowed(inside_now, [LA], DEFAULT) == inside_now


def test_east_of_utc_the_local_day_starts_before_the_utc_one() -> None:
    # 22:00 UTC on the 10th is 07:00 on the 11th in Tokyo: opens at 23:00 UTC.
    assert next_allowed(utc(2026, 6, 10, 22, 0), [TOKYO], DEFAULT) == utc(2026, 6, 10, 23, 0)
    # 12:30 UTC is 21:30 in Tokyo: the next local morning, 23:00 UTC the same UTC day.
    assert next_allowed(utc(2026, 6, 10, 12, 30), [TOKYO], DEFAULT) == utc(2026, 6, 10, 23, 0)


def test_weekends_are_skipped() -> None:
    weekdays = CallingWindow.parse("09:00-17:00", "mon,tue,wed,thu,fri")
    friday_evening = utc(2026, 6, 12, 21, 30)  # Friday 17:30 EDT
    assert next_allowed(friday_evening, [NY], weekdays) == utc(2026, 6, 15, 13, 0)  # Monday 09:00
    saturday_noon = utc(2026, 6, 13, 16, 0)
    assert next_allowed(saturday_noon, [NY], weekdays) == utc(2026, 6, 15, 13, 0)


def test_spring_forward_day() -> None:
    # 2026-03-08: New York skips 02:00-03:00. Saturday 22:00 EST → Sunday 08:00 EDT (12:00 UTC,
    # not 13:00 as the evening's offset would say).
    assert next_allowed(utc(2026, 3, 8, 3, 0), [NY], DEFAULT) == utc(2026, 3, 8, 12, 0)
    # A window opening at 02:30, a wall time that does not exist that day, opens when the
    # clock jumps to 03:00 EDT (07:00 UTC).
    early = CallingWindow.parse("02:30-05:00")
    assert next_allowed(utc(2026, 3, 8, 6, 0), [NY], early) == utc(2026, 3, 8, 7, 0)
    # ... and closes at 05:00 EDT.
    [first, *_] = zone_intervals(
        NY, early, int(utc(2026, 3, 8).timestamp()), int(utc(2026, 3, 9).timestamp())
    )
    assert first == (int(utc(2026, 3, 8, 7).timestamp()), int(utc(2026, 3, 8, 9).timestamp()))


def test_fall_back_day() -> None:
    # 2026-11-01: New York repeats 01:00-02:00. Saturday 21:30 EDT → Sunday 08:00 EST (13:00 UTC).
    assert next_allowed(utc(2026, 11, 1, 1, 30), [NY], DEFAULT) == utc(2026, 11, 1, 13, 0)
    # A window opening at 01:30 opens twice: at 01:30 EDT and again at 01:30 EST.
    late = CallingWindow.parse("01:30-03:00")
    assert next_allowed(utc(2026, 11, 1, 5, 0), [NY], late) == utc(2026, 11, 1, 5, 30)
    in_fold = utc(2026, 11, 1, 5, 45)  # 01:45 EDT
    assert next_allowed(in_fold, [NY], late) == in_fold
    # 01:10 EST (after the clocks went back) is before 01:30 again.
    assert next_allowed(utc(2026, 11, 1, 6, 10), [NY], late) == utc(2026, 11, 1, 6, 30)


def test_london_spring_forward() -> None:
    london = ZoneInfo("Europe/London")
    # Saturday 2026-03-28 22:00 GMT → Sunday 08:00 BST = 07:00 UTC.
    assert next_allowed(utc(2026, 3, 28, 22, 0), [london], DEFAULT) == utc(2026, 3, 29, 7, 0)


def test_a_multi_zone_region_must_be_inside_in_every_zone() -> None:
    zones = [ZoneInfo(n) for n in zone_names("+19075551234")]  # Alaska: Anchorage and Adak
    assert {z.key for z in zones} == {"America/Anchorage", "America/Adak"}
    # 16:30 UTC in June: 08:30 in Anchorage (AKDT) but 07:30 in Adak (HDT).
    now = utc(2026, 6, 10, 16, 30)
    assert inside(now, ZoneInfo("America/Anchorage"), DEFAULT)
    assert next_allowed(now, zones, DEFAULT) == utc(2026, 6, 10, 17, 0)
    # Closing: 21:00 in Anchorage comes first (05:00 UTC), then the next Adak morning.
    assert next_allowed(utc(2026, 6, 11, 5, 0), zones, DEFAULT) == utc(2026, 6, 11, 17, 0)


def test_zones_that_never_share_the_window() -> None:
    office = CallingWindow.parse("09:00-17:00")
    assert next_allowed(utc(2026, 6, 10, 12, 0), [NY, TOKYO], office) is None


def test_toll_free_spans_guam_to_pago_pago() -> None:
    zones = [ZoneInfo(n) for n in zone_names("+18005551234")]
    assert {"Pacific/Guam", "Pacific/Pago_Pago", "America/St_Johns"} <= {z.key for z in zones}
    # With 08:00-21:00 every zone is inside only from 22:00 (08:00 in Guam) to 23:30 UTC
    # (21:00 in Newfoundland) in summer.
    assert next_allowed(utc(2026, 7, 1, 3, 0), zones, DEFAULT) == utc(2026, 7, 1, 22, 0)
    assert next_allowed(utc(2026, 7, 1, 23, 30), zones, DEFAULT) == utc(2026, 7, 2, 22, 0)
    # With office hours no instant satisfies them all.
    assert next_allowed(utc(2026, 7, 1), zones, CallingWindow.parse("09:00-17:00")) is None


def test_an_offset_change_months_ahead_opens_the_first_common_window() -> None:
    # Brisbane keeps +10; Sydney is +11 until daylight time ends on Sunday 2026-04-05.
    # A half-hour window is shared only once both are at +10.
    window = CallingWindow.parse("09:00-09:30")
    zones = [ZoneInfo("Australia/Brisbane"), ZoneInfo("Australia/Sydney")]
    assert next_allowed(utc(2026, 1, 10), zones, window) == utc(2026, 4, 4, 23, 0)


def test_no_zone_means_no_time() -> None:
    assert next_allowed(utc(2026, 1, 1), [], DEFAULT) is None


def test_all_day_is_always_now() -> None:
    now = utc(2026, 1, 1, 3, 0)
    assert next_allowed(now, [NY, TOKYO], CallingWindow.parse("00:00-24:00")) == now


def _brute_force(now: datetime, zones: list[ZoneInfo], window: CallingWindow) -> datetime | None:
    t = now
    for _ in range(8 * 24 * 60):
        if all(inside(t, z, window) for z in zones):
            return t
        t += timedelta(minutes=1)
    return None


ZONES = [
    "America/New_York",
    "America/Los_Angeles",
    "America/St_Johns",
    "Europe/London",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Lord_Howe",
    "Australia/Sydney",
    "Pacific/Chatham",
    "Pacific/Honolulu",
]


def test_agrees_with_a_minute_by_minute_search() -> None:
    """Random instants (many near DST changes), zones and windows: the interval arithmetic
    matches walking the clock a minute at a time and asking each zone its wall time."""
    rng = random.Random(15)
    anchors = [
        utc(2026, 3, 8),
        utc(2026, 3, 29),
        utc(2026, 4, 5),
        utc(2026, 10, 4),
        utc(2026, 11, 1),
    ]
    for _ in range(40):
        base = rng.choice(anchors) + timedelta(minutes=rng.randrange(-3 * 1440, 3 * 1440))
        zones = [ZoneInfo(n) for n in rng.sample(ZONES, rng.choice((1, 1, 2, 3)))]
        start = rng.randrange(0, 20 * 60, 15)
        end = rng.randrange(start + 15, 24 * 60 + 1, 15)
        days = ",".join(
            rng.sample(["mon", "tue", "wed", "thu", "fri", "sat", "sun"], rng.randint(2, 7))
        )
        window = CallingWindow.parse(
            f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}", days
        )
        expected = _brute_force(base, zones, window)
        found = next_allowed(base, zones, window)
        if expected is None:
            assert found is None or found - base >= timedelta(days=8) - timedelta(minutes=1)
        else:
            assert found == expected, (base, [z.key for z in zones], window)
