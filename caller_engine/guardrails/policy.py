"""Whether a new call may be placed: the refusals and the calling-hours decision."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from caller_engine.guardrails.frequency import cap_reached_until
from caller_engine.guardrails.hours import CallingWindow, next_allowed
from caller_engine.guardrails.zones import zone, zone_names

RefusalReason = Literal["outside_calling_hours", "do_not_call", "frequency_cap"]
HTTP_STATUS: dict[RefusalReason, int] = {
    "outside_calling_hours": 422,
    "do_not_call": 403,
    "frequency_cap": 429,
}


class CallRefused(Exception):
    """The call must not be placed; nothing was recorded or dialed."""

    def __init__(
        self,
        reason: RefusalReason,
        message: str,
        *,
        next_allowed_at: datetime | None = None,
        callee_timezones: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.next_allowed_at = next_allowed_at
        self.callee_timezones = callee_timezones

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.reason]

    def details(self) -> dict[str, object]:
        """The fields an orchestrator acts on, beside code and message."""
        out: dict[str, object] = {}
        if self.reason != "do_not_call":
            out["nextAllowedAt"] = iso_utc(self.next_allowed_at)
        if self.callee_timezones is not None:
            out["calleeTimezones"] = list(self.callee_timezones)
        return out


def iso_utc(when: datetime | None) -> str | None:
    """ISO 8601 in UTC to the second, rounded up (a retry at that time is not too early)."""
    if when is None:
        return None
    if when.microsecond:
        when = when.replace(microsecond=0) + timedelta(seconds=1)
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Admission:
    """What a new call must pass in the transaction that creates its record: the calling-
    hours decision made beforehand (raised only when the call is new, so a retry of an
    accepted call stays a duplicate), the do-not-call list and the frequency cap."""

    hours: CallRefused | None = None
    max_calls: int = 0
    window: timedelta = field(default_factory=lambda: timedelta(hours=24))
    # Moves a time the cap lifts to the first instant inside calling hours from then on.
    open_from: Callable[[datetime], datetime] = field(default=lambda at: at)


@dataclass(frozen=True, slots=True)
class HoursDecision:
    zones: tuple[str, ...]
    refusal: CallRefused | None
    overridden: bool  # ignoreCallingHours was asked for and honoured


@dataclass(frozen=True, slots=True)
class CallingHours:
    window: CallingWindow
    allow_override: bool = False

    def decide(
        self,
        number: str,
        now: datetime,
        *,
        callee_timezone: str | None = None,
        ignore: bool = False,
    ) -> HoursDecision:
        names = (callee_timezone,) if callee_timezone else zone_names(number)
        zones = [z for z in (zone(n) for n in names) if z is not None]
        if ignore and self.allow_override:
            return HoursDecision(names, None, overridden=True)
        when = next_allowed(now, zones, self.window)
        if when == now:
            return HoursDecision(names, None, overridden=False)
        return HoursDecision(names, self._refusal(names, zones, when, ignore), overridden=False)

    def adjust(self, number: str, at: datetime, callee_timezone: str | None) -> datetime:
        """The first instant from `at` inside calling hours (`at` itself when it is)."""
        names = (callee_timezone,) if callee_timezone else zone_names(number)
        zones = [z for z in (zone(n) for n in names) if z is not None]
        return next_allowed(at, zones, self.window) or at

    def _refusal(
        self,
        names: tuple[str, ...],
        zones: list[ZoneInfo],
        when: datetime | None,
        ignore: bool,
    ) -> CallRefused:
        hours = self.window.describe()
        if when is not None:
            where = names[0] if len(names) == 1 else f"all {len(names)} of the number's time zones"
            message = (
                f"outside calling hours ({hours}) in {where}; "
                f"the next allowed time is {iso_utc(when)}"
            )
        elif not zones:
            message = "the callee's time zone is unknown; send calleeTimezone (an IANA name)"
        else:
            message = (
                f"no time is inside calling hours ({hours}) in all {len(names)} time zones "
                "of this number; send calleeTimezone (an IANA name) for the callee's zone"
            )
        if ignore:
            message += "; ignoreCallingHours is not allowed here (ALLOW_CALLING_HOURS_OVERRIDE)"
        return CallRefused(
            "outside_calling_hours", message, next_allowed_at=when, callee_timezones=names
        )


def describe_seconds(seconds: float) -> str:
    """`24 h`, `7 d`, `30 min`, `90 s`: the largest unit that divides it (days from two)."""
    for unit, size in (("d", 86_400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0 and (unit != "d" or seconds >= 2 * size):
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"


def admit(
    admission: Admission,
    *,
    listed: bool,
    dialed: list[datetime],
    now: datetime,
) -> CallRefused | None:
    """The refusal for a new call, if any: the do-not-call list first (it never lifts by
    itself), then calling hours, then the frequency cap. `dialed`: when the other calls to
    this number were created (refused and failed dials excluded)."""
    if listed:
        return CallRefused("do_not_call", "this number is on the do-not-call list")
    if admission.hours is not None:
        return admission.hours
    until = cap_reached_until(dialed, admission.max_calls, admission.window, now)
    if until is not None:
        until = admission.open_from(until)
        window = describe_seconds(admission.window.total_seconds())
        return CallRefused(
            "frequency_cap",
            f"this number was called {admission.max_calls} time(s) in the last {window} "
            f"(MAX_CALLS_PER_NUMBER); the next call is allowed at {iso_utc(until)}",
            next_allowed_at=until,
        )
    return None
