"""Calling hours in the callee's local time. Pure: no clock, no I/O.

A window is a span of local wall-clock time [start, end) on some weekdays. A callee whose
number spans several zones may be called only while every one of them is inside it.

Instants are UTC epoch seconds. Between two offset changes of a zone, local wall time is UTC
shifted by a constant, so the allowed instants of each such span are computed exactly and the
lists of every zone are intersected. DST gaps and folds need no special case: a window that
opens at a wall time skipped by a spring-forward opens when the clock jumps past it, and a
wall time that occurs twice is inside the window both times.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

DAY = 86_400
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Offsets are sampled this often and each change is located to the second by bisection
# (once per zone and year); no zone changes its offset twice within it.
SAMPLE_STEP = 12 * 3600
# How far ahead a common window is looked for: a week and a day first (enough unless an
# offset change is what opens one), then a little over a year.
SHORT_HORIZON = 8 * DAY
LONG_HORIZON = 371 * DAY

Interval = tuple[int, int]
_HHMM = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


class WindowError(ValueError):
    """A CALLING_HOURS or CALLING_DAYS value that is not a window."""


@dataclass(frozen=True, slots=True)
class CallingWindow:
    start: int  # seconds after local midnight
    end: int  # seconds after local midnight; start < end <= DAY
    days: frozenset[int]  # 0 = Monday

    @classmethod
    def parse(cls, hours: str, days: str = ",".join(WEEKDAYS)) -> CallingWindow:
        """`08:00-21:00` (`00:00-24:00` is all day) and `mon,tue,…` (every day when empty)."""
        match = _HHMM.match(hours)
        if match is None:
            raise WindowError("must look like 08:00-21:00")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if m1 > 59 or m2 > 59 or h1 > 23 or h2 > 24 or (h2 == 24 and m2):
            raise WindowError("times must be 00:00 to 24:00")
        start, end = (h1 * 60 + m1) * 60, (h2 * 60 + m2) * 60
        if start >= end:
            raise WindowError("the end must be later than the start (00:00-24:00 is all day)")
        names = [d.strip().lower()[:3] for d in days.split(",") if d.strip()] or list(WEEKDAYS)
        unknown = [d for d in names if d not in WEEKDAYS]
        if unknown:
            raise WindowError(f"days must be among {','.join(WEEKDAYS)}")
        return cls(start, end, frozenset(WEEKDAYS.index(d) for d in names))

    @property
    def always(self) -> bool:
        return self.start == 0 and self.end == DAY and len(self.days) == 7

    def describe(self) -> str:
        def hhmm(s: int) -> str:
            return f"{s // 3600:02d}:{s % 3600 // 60:02d}"

        days = (
            "every day" if len(self.days) == 7 else ",".join(WEEKDAYS[d] for d in sorted(self.days))
        )
        return f"{hhmm(self.start)}-{hhmm(self.end)} {days}"


def _offset(zone: ZoneInfo, t: int) -> int:
    delta = datetime.fromtimestamp(t, zone).utcoffset()
    assert delta is not None
    return int(delta.total_seconds())


@lru_cache(maxsize=8192)
def _transitions(zone: ZoneInfo, year: int) -> tuple[tuple[int, int], ...]:
    """(instant, offset from then on) of each offset change of `zone` in a UTC year."""
    a = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    b = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp())
    found: list[tuple[int, int]] = []
    t, current = a, _offset(zone, a)
    while t < b:
        nxt = min(t + SAMPLE_STEP, b)
        offset = _offset(zone, nxt)
        if offset != current:
            lo, hi = t, nxt  # offset(lo) == current != offset(hi)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset(zone, mid) == current:
                    lo = mid
                else:
                    hi = mid
            current = _offset(zone, hi)
            found.append((hi, current))
        t = nxt
    return tuple(found)


def _year(t: int) -> int:
    return datetime.fromtimestamp(t, UTC).year


def offset_spans(zone: ZoneInfo, a: int, b: int) -> list[tuple[int, int, int]]:
    """[(from, to, offset)]: spans of constant UTC offset covering [a, b)."""
    spans: list[tuple[int, int, int]] = []
    begin, current = a, _offset(zone, a)
    for year in range(_year(a), _year(b - 1) + 1):
        for at, offset in _transitions(zone, year):
            if a < at < b:
                spans.append((begin, at, current))
                begin, current = at, offset
    spans.append((begin, b, current))
    return spans


def changes_offset(zone: ZoneInfo, a: int, b: int) -> bool:
    return len(offset_spans(zone, a, b)) > 1


def zone_intervals(zone: ZoneInfo, window: CallingWindow, a: int, b: int) -> list[Interval]:
    """The instants of [a, b) at which `zone` is inside `window`, as sorted disjoint
    half-open intervals of epoch seconds."""
    out: list[Interval] = []
    for p, q, offset in offset_spans(zone, a, b):
        wall_lo, wall_hi = p + offset, q + offset
        for day in range(wall_lo // DAY, (wall_hi - 1) // DAY + 1):
            if (day + 3) % 7 not in window.days:  # 1970-01-01 was a Thursday
                continue
            lo = max(day * DAY + window.start, wall_lo) - offset
            hi = min(day * DAY + window.end, wall_hi) - offset
            if lo >= hi:
                continue
            if out and out[-1][1] >= lo:
                out[-1] = (out[-1][0], max(out[-1][1], hi))
            else:
                out.append((lo, hi))
    return out


def intersect(x: Sequence[Interval], y: Sequence[Interval]) -> list[Interval]:
    """Intersection of two sorted lists of disjoint half-open intervals."""
    out: list[Interval] = []
    i = j = 0
    while i < len(x) and j < len(y):
        lo, hi = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        if lo < hi:
            out.append((lo, hi))
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return out


def common_intervals(
    zones: Iterable[ZoneInfo], window: CallingWindow, a: int, b: int
) -> list[Interval]:
    """The instants of [a, b) at which every zone is inside the window."""
    common: list[Interval] | None = None
    for zone in zones:
        own = zone_intervals(zone, window, a, b)
        common = own if common is None else intersect(common, own)
        if not common:
            return []
    return common or []


def inside(now: datetime, zone: ZoneInfo, window: CallingWindow) -> bool:
    local = now.astimezone(zone)
    seconds = local.hour * 3600 + local.minute * 60 + local.second
    return local.weekday() in window.days and window.start <= seconds < window.end


def next_allowed(
    now: datetime, zones: Sequence[ZoneInfo], window: CallingWindow
) -> datetime | None:
    """`now` when every zone is inside the window now; otherwise the first instant at which
    they all are (exact to the second); None when no such instant comes within a year, or
    there is no zone."""
    if not zones:
        return None
    if window.always or all(inside(now, z, window) for z in zones):
        return now
    t = now.timestamp()
    start = int(t // 1)
    for horizon in (SHORT_HORIZON, LONG_HORIZON):
        # A week and a day repeat for as long as no zone changes its offset.
        if horizon == LONG_HORIZON and not any(
            changes_offset(z, start, start + horizon) for z in zones
        ):
            return None
        for lo, hi in common_intervals(zones, window, start, start + horizon):
            if hi > t:
                return now if lo <= t else datetime.fromtimestamp(lo, UTC)
    return None
