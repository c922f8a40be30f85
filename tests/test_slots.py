from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from caller_engine.tools import booking
from caller_engine.tools.slots import (
    BookingRefused,
    BusinessHours,
    Interval,
    Slot,
    booking_slot,
    check_date,
    closed_reason,
    day_slots,
    free_slots,
    parse_busy,
    parse_clock,
    parse_date,
    working_window,
)

NY = ZoneInfo("America/New_York")
MON_SAT = frozenset(range(6))


def hours(
    start: int = 9,
    end: int = 20,
    days: frozenset[int] = MON_SAT,
    minutes: int = 30,
    horizon: int = 90,
    tz: ZoneInfo = NY,
) -> BusinessHours:
    return BusinessHours(tz, start, end, days, minutes, horizon)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=NY)


EARLY = local(2025, 3, 3, 7, 0)  # Monday morning, before opening


def labels(slots: Sequence[Slot]) -> list[str]:
    return [s.label for s in slots]


def test_day_slots_cover_working_hours_on_a_half_hour_grid() -> None:
    slots = day_slots(hours(), date(2025, 3, 4))
    assert len(slots) == 22
    assert slots[0].label == "09:00" and slots[-1].label == "19:30"
    assert slots[0].start == utc(2025, 3, 4, 14, 0)  # EST = UTC-5
    assert all((s.end - s.start).total_seconds() == 1800 for s in slots)


def test_slot_length_and_grid_follow_appointment_minutes() -> None:
    slots = day_slots(hours(start=9, end=12, minutes=40), date(2025, 3, 4))
    assert labels(slots) == ["09:00", "09:40", "10:20", "11:00"]  # 11:40 would end at 12:20


def test_no_slots_on_closed_days() -> None:
    assert day_slots(hours(), date(2025, 3, 9)) == []  # Sunday
    assert closed_reason(hours(), date(2025, 3, 9)) == (
        "We are closed on Sundays; we are open Monday to Saturday."
    )
    assert closed_reason(hours(), date(2025, 3, 8)) is None


def test_spring_forward_uses_the_new_offset_and_skips_missing_times() -> None:
    everyday = frozenset(range(7))
    day = date(2025, 3, 9)  # clocks jump 02:00 → 03:00 in New York
    morning = day_slots(hours(start=9, end=11, days=everyday), day)
    assert [s.start for s in morning] == [
        utc(2025, 3, 9, 13, 0),
        utc(2025, 3, 9, 13, 30),
        utc(2025, 3, 9, 14, 0),
        utc(2025, 3, 9, 14, 30),
    ]  # EDT = UTC-4, the day before was UTC-5
    night = day_slots(hours(start=1, end=4, days=everyday), day)
    assert labels(night) == ["01:00", "01:30", "03:00", "03:30"]
    # 01:30 EST lasts until 03:00 EDT: thirty minutes of elapsed time
    assert night[1].end == night[2].start


def test_fall_back_gives_each_wall_time_once_with_elapsed_durations() -> None:
    everyday = frozenset(range(7))
    day = date(2025, 11, 2)  # 02:00 EDT → 01:00 EST
    slots = day_slots(hours(start=0, end=3, days=everyday), day)
    assert labels(slots) == ["00:00", "00:30", "01:00", "01:30", "02:00", "02:30"]
    assert all((s.end - s.start).total_seconds() == 1800 for s in slots)
    assert slots[4].start == utc(2025, 11, 2, 7, 0)  # 02:00 EST
    window = working_window(hours(start=0, end=3, days=everyday), day)
    assert (window.end - window.start).total_seconds() == 4 * 3600  # a 25-hour day


def test_busy_blocks_remove_every_overlapping_slot() -> None:
    slots = day_slots(hours(), date(2025, 3, 4))
    busy = parse_busy(
        [
            {"start": "2025-03-04T10:00:00-05:00", "end": "2025-03-04T11:00:00-05:00"},
            {"start": "2025-03-04T18:15:00Z", "end": "2025-03-04T18:45:00Z"},  # 13:15-13:45
        ]
    )
    free = labels(free_slots(slots, busy, EARLY))
    assert "09:30" in free and "11:00" in free and "12:30" in free and "14:00" in free
    for taken in ("10:00", "10:30", "13:00", "13:30"):
        assert taken not in free
    assert len(free) == 18


def test_busy_times_are_compared_as_instants_across_dst() -> None:
    everyday = frozenset(range(7))
    h = hours(days=everyday)
    block = [Interval(utc(2025, 3, 9, 13, 0), utc(2025, 3, 9, 14, 0))]
    after = labels(free_slots(day_slots(h, date(2025, 3, 9)), block, EARLY))
    assert after[:2] == ["10:00", "10:30"]  # 13:00Z is 09:00 EDT
    block = [Interval(utc(2025, 3, 8, 13, 0), utc(2025, 3, 8, 14, 0))]
    before = labels(free_slots(day_slots(h, date(2025, 3, 8)), block, EARLY))
    assert before[0] == "09:00"  # 13:00Z is 08:00 EST, before opening


def test_slots_already_started_are_excluded() -> None:
    slots = day_slots(hours(), date(2025, 3, 4))
    now = local(2025, 3, 4, 13, 10)
    assert labels(free_slots(slots, [], now))[0] == "13:30"
    assert labels(free_slots(slots, [], local(2025, 3, 4, 13, 30)))[0] == "14:00"


def test_dates_in_the_past_or_beyond_the_horizon_are_refused() -> None:
    check_date(hours(), date(2025, 3, 3), EARLY)
    check_date(hours(), date(2025, 6, 1), EARLY)  # exactly 90 days ahead
    with pytest.raises(BookingRefused, match="in the past; today is Monday 2025-03-03"):
        check_date(hours(), date(2025, 3, 2), EARLY)
    with pytest.raises(BookingRefused, match="at most 90 days ahead"):
        check_date(hours(), date(2025, 6, 2), EARLY)


def test_today_is_the_business_date_not_the_utc_date() -> None:
    late_evening = local(2025, 3, 3, 22, 0)  # already March 4th in UTC
    check_date(hours(), date(2025, 3, 3), late_evening)


@pytest.mark.parametrize(
    ("text", "expected"), [("2025-03-04", date(2025, 3, 4)), (" 2025-12-31 ", date(2025, 12, 31))]
)
def test_parse_date(text: str, expected: date) -> None:
    assert parse_date(text) == expected


@pytest.mark.parametrize("text", ["2025-02-30", "tomorrow", "03/04/2025"])
def test_parse_date_refuses_non_dates(text: str) -> None:
    with pytest.raises(BookingRefused, match="use YYYY-MM-DD"):
        parse_date(text)


def test_parse_clock() -> None:
    assert parse_clock("9:00") == (9, 0)
    assert parse_clock("19:30") == (19, 30)
    for bad in ("24:00", "9", "09:5", "noon", "12:60"):
        with pytest.raises(BookingRefused):
            parse_clock(bad)


def test_booking_slot_accepts_a_grid_time_in_working_hours() -> None:
    slot = booking_slot(hours(), date(2025, 3, 4), "19:30", EARLY)
    assert slot.label == "19:30"
    assert slot.end == utc(2025, 3, 5, 1, 0)


@pytest.mark.parametrize(
    ("day", "clock", "message"),
    [
        (date(2025, 3, 9), "10:00", "closed on Sundays"),
        (date(2025, 3, 4), "08:30", "outside working hours"),
        (date(2025, 3, 4), "20:00", "outside working hours"),
        (date(2025, 3, 4), "09:15", "start every 30 minutes"),
        (date(2025, 3, 3), "06:30", "outside working hours"),
        (date(2025, 2, 28), "10:00", "in the past"),
    ],
)
def test_booking_slot_refusals(day: date, clock: str, message: str) -> None:
    with pytest.raises(BookingRefused, match=message):
        booking_slot(hours(), day, clock, EARLY)


def test_booking_slot_refuses_a_time_that_has_passed_today() -> None:
    with pytest.raises(BookingRefused, match="already passed; it is now 13:10"):
        booking_slot(hours(), date(2025, 3, 4), "13:00", local(2025, 3, 4, 13, 10))


def test_booking_slot_refuses_a_slot_that_would_end_after_closing() -> None:
    with pytest.raises(BookingRefused, match="end after closing"):
        booking_slot(hours(start=9, end=12, minutes=40), date(2025, 3, 4), "11:40", EARLY)


def test_booking_slot_in_a_dst_gap() -> None:
    h = hours(start=0, end=6, days=frozenset(range(7)))
    with pytest.raises(BookingRefused, match="does not exist"):
        booking_slot(h, date(2025, 3, 9), "02:30", EARLY)


def test_describe_days() -> None:
    assert hours().describe_days() == "Monday to Saturday"
    assert hours(days=frozenset({0, 2, 4})).describe_days() == "Monday, Wednesday and Friday"
    assert hours(days=frozenset({3})).describe_days() == "Thursday"


def test_slot_event_ids_are_valid_base32hex_and_distinct() -> None:
    slot = booking_slot(hours(), date(2025, 3, 4), "10:00", EARLY)
    other = booking_slot(hours(), date(2025, 3, 4), "10:30", EARLY)
    first = booking.slot_event_id("cal", slot)
    assert first == booking.slot_event_id("cal", slot)
    assert len(first) == 32 and set(first) <= set("0123456789abcdefghijklmnopqrstuv")
    assert (
        len({first, booking.slot_event_id("cal", slot, 1), booking.slot_event_id("x", slot)}) == 3
    )
    assert booking.slot_event_id("cal", other) != first


def test_event_body_and_ownership() -> None:
    h = hours()
    slot = booking_slot(h, date(2025, 3, 4), "10:00", EARLY)
    body = booking.event_body(
        "abcde", slot, h, name="Ada Lovelace", phone="+15550002222", email=None, callback_id="cb-9"
    )
    assert body["summary"] == "Appointment - Ada Lovelace"
    assert body["start"] == {
        "dateTime": "2025-03-04T10:00:00-05:00",
        "timeZone": "America/New_York",
    }
    assert body["end"]["dateTime"] == "2025-03-04T10:30:00-05:00"
    assert "Phone: +15550002222" in body["description"] and "cb-9" in body["description"]
    event = {**body, "status": "confirmed"}
    assert booking.is_own(event, slot, name="Ada Lovelace", callback_id="cb-9")
    assert not booking.is_own(event, slot, name="Ada Lovelace", callback_id="cb-other")
    assert not booking.is_own(event, slot, name="Grace Hopper", callback_id="cb-9")
    assert not booking.occupies({**event, "status": "cancelled"}, slot)
    moved = {**event, "start": {"dateTime": "2025-03-04T11:00:00-05:00"}}
    assert not booking.occupies(moved, slot)
