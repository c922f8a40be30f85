"""Working hours, the appointment grid and booking rules, in the business timezone.

Pure functions without I/O. Every instant is kept in UTC internally: Python compares and adds
aware datetimes that share a tzinfo by wall clock, which is wrong across a DST change, so
local times only appear at the edges (labels, event bodies).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from caller_engine.config import Settings

DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class BookingRefused(Exception):
    """A request the business rules refuse; the message is meant for the caller."""


@dataclass(frozen=True, slots=True)
class Interval:
    start: datetime  # UTC
    end: datetime  # UTC

    def overlaps(self, other: Interval) -> bool:
        return self.start < other.end and other.start < self.end


@dataclass(frozen=True, slots=True)
class Slot:
    label: str  # local wall-clock start, "HH:MM"
    start: datetime  # UTC
    end: datetime  # UTC

    @property
    def interval(self) -> Interval:
        return Interval(self.start, self.end)


@dataclass(frozen=True, slots=True)
class BusinessHours:
    tz: ZoneInfo
    start_hour: int
    end_hour: int  # exclusive; 24 means midnight at the end of the day
    weekdays: frozenset[int]  # Monday = 0
    slot_minutes: int
    horizon_days: int

    @classmethod
    def from_settings(cls, settings: Settings) -> BusinessHours:
        return cls(
            tz=ZoneInfo(settings.business_timezone),
            start_hour=settings.workday_start_hour,
            end_hour=settings.workday_end_hour,
            weekdays=settings.working_weekdays,
            slot_minutes=settings.appointment_minutes,
            horizon_days=settings.booking_horizon_days,
        )

    @property
    def tz_name(self) -> str:
        return self.tz.key

    def local(self, instant: datetime) -> datetime:
        return instant.astimezone(self.tz)

    def today(self, now: datetime) -> date:
        return now.astimezone(self.tz).date()

    def describe_days(self) -> str:
        """'Monday to Saturday', or a list when the days are not one run."""
        days = sorted(self.weekdays)
        if len(days) == 1:
            return DAY_NAMES[days[0]]
        if days == list(range(days[0], days[-1] + 1)):
            return f"{DAY_NAMES[days[0]]} to {DAY_NAMES[days[-1]]}"
        return ", ".join(DAY_NAMES[d] for d in days[:-1]) + " and " + DAY_NAMES[days[-1]]

    def describe_hours(self) -> str:
        return f"{self.start_hour:02d}:00 to {self.end_hour % 24:02d}:00"


def _to_utc(hours: BusinessHours, day: date, minutes: int) -> datetime | None:
    """The UTC instant of a local wall time `minutes` after midnight; None in a DST gap."""
    naive = datetime.combine(day, time()) + timedelta(minutes=minutes)
    aware = naive.replace(tzinfo=hours.tz)
    instant = aware.astimezone(UTC)
    if instant.astimezone(hours.tz).replace(tzinfo=None) != naive:
        return None
    return instant


def working_window(hours: BusinessHours, day: date) -> Interval:
    """Opening to closing time of a day (whether or not it is a working day)."""
    start = _to_utc(hours, day, hours.start_hour * 60)
    end = _to_utc(hours, day, hours.end_hour * 60)
    # A boundary inside a DST gap moves to the first instant after the gap.
    if start is None:
        start = _to_utc(hours, day, hours.start_hour * 60 + 60)
    if end is None:
        end = _to_utc(hours, day, hours.end_hour * 60 + 60)
    assert start is not None and end is not None
    return Interval(start, end)


def day_slots(hours: BusinessHours, day: date) -> list[Slot]:
    """Every appointment slot of a working day on the grid from opening time.

    Slots start every `slot_minutes` of local wall-clock time and last `slot_minutes` of
    elapsed time; wall times that do not exist that day (spring forward) are left out.
    """
    if day.weekday() not in hours.weekdays:
        return []
    close = working_window(hours, day).end
    slots: list[Slot] = []
    for minutes in range(hours.start_hour * 60, hours.end_hour * 60, hours.slot_minutes):
        start = _to_utc(hours, day, minutes)
        if start is None:
            continue
        end = start + timedelta(minutes=hours.slot_minutes)
        if end > close:
            break
        slots.append(Slot(f"{minutes // 60:02d}:{minutes % 60:02d}", start, end))
    return slots


def free_slots(slots: Iterable[Slot], busy: Iterable[Interval], now: datetime) -> list[Slot]:
    """Slots that start after `now` and overlap no busy interval."""
    blocked = list(busy)
    now = now.astimezone(UTC)
    return [s for s in slots if s.start > now and not any(s.interval.overlaps(b) for b in blocked)]


def parse_instant(value: str) -> datetime:
    """An RFC 3339 date-time with offset (or Z) as a UTC datetime."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"date-time without offset: {value!r}")
    return parsed.astimezone(UTC)


def parse_busy(items: Iterable[Mapping[str, Any]]) -> list[Interval]:
    """The `busy` list of a freebusy answer."""
    return [Interval(parse_instant(str(i["start"])), parse_instant(str(i["end"]))) for i in items]


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise BookingRefused(
            f"'{text}' is not a date; use YYYY-MM-DD, for example 2025-03-14."
        ) from None


def parse_clock(text: str) -> tuple[int, int]:
    value = text.strip()
    hh, sep, mm = value.partition(":")
    if sep and hh.isdigit() and mm.isdigit() and len(mm) == 2 and len(hh) <= 2:
        hour, minute = int(hh), int(mm)
        if hour < 24 and minute < 60:
            return hour, minute
    raise BookingRefused(f"'{text}' is not a time; use 24-hour HH:MM, for example 14:30.")


def check_date(hours: BusinessHours, day: date, now: datetime) -> None:
    """Refuse dates in the past or beyond the booking horizon."""
    today = hours.today(now)
    if day < today:
        raise BookingRefused(
            f"{day.isoformat()} is in the past; today is {DAY_NAMES[today.weekday()]} "
            f"{today.isoformat()}."
        )
    last = today + timedelta(days=hours.horizon_days)
    if day > last:
        raise BookingRefused(
            f"Appointments can be booked at most {hours.horizon_days} days ahead "
            f"(until {last.isoformat()})."
        )


def closed_reason(hours: BusinessHours, day: date) -> str | None:
    if day.weekday() in hours.weekdays:
        return None
    return f"We are closed on {DAY_NAMES[day.weekday()]}s; we are open {hours.describe_days()}."


def booking_slot(hours: BusinessHours, day: date, clock: str, now: datetime) -> Slot:
    """The slot a booking request names, or BookingRefused saying why it cannot be booked."""
    check_date(hours, day, now)
    closed = closed_reason(hours, day)
    if closed:
        raise BookingRefused(closed)
    hour, minute = parse_clock(clock)
    label = f"{hour:02d}:{minute:02d}"
    minutes = hour * 60 + minute
    if minutes < hours.start_hour * 60 or minutes >= hours.end_hour * 60:
        raise BookingRefused(
            f"{label} is outside working hours; appointments are between {hours.describe_hours()}."
        )
    offset = minutes - hours.start_hour * 60
    if offset % hours.slot_minutes:
        raise BookingRefused(
            f"Appointments start every {hours.slot_minutes} minutes from "
            f"{hours.start_hour:02d}:00; {label} is not a start time."
        )
    slot = next((s for s in day_slots(hours, day) if s.label == label), None)
    if slot is None:
        if _to_utc(hours, day, minutes) is None:
            raise BookingRefused(f"{label} does not exist on {day.isoformat()} (clock change).")
        raise BookingRefused(
            f"An appointment at {label} would end after closing time "
            f"({hours.end_hour % 24:02d}:00)."
        )
    if slot.start <= now.astimezone(UTC):
        local_now = hours.local(now)
        raise BookingRefused(
            f"{label} on {day.isoformat()} has already passed; it is now "
            f"{local_now:%H:%M} on {local_now.date().isoformat()}."
        )
    return slot
