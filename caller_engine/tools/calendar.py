"""`check_availability` and `schedule_meeting` over Google Calendar freebusy and events.

Booking re-checks freebusy right before inserting. Within this process, check-and-insert is
serialized per calendar by an asyncio lock; across processes the deterministic event id of
the slot (see `booking`) makes the claim atomic on Google's side (409 `duplicate`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from caller_engine.tools import booking
from caller_engine.tools.email import is_email_address
from caller_engine.tools.failures import google_failure, refusal
from caller_engine.tools.google_errors import GoogleApiError
from caller_engine.tools.registry import Tool, ToolContext, ToolOutput
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
    parse_date,
    working_window,
)

if TYPE_CHECKING:
    from caller_engine.tools.google_client import GoogleApis

Clock = Callable[[], datetime]
NO_AVAILABILITY = "No availability on this date"
SERVICE = "calendar"
# Fresh ids to try when a slot's id belongs to a cancelled or moved event.
MAX_GENERATIONS = 8
DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"
TIME_PATTERN = r"^\d{1,2}:\d{2}$"


class AvailabilityArgs(BaseModel):
    date: str = Field(pattern=DATE_PATTERN, description="The date to check, YYYY-MM-DD.")


class MeetingArgs(BaseModel):
    date: str = Field(pattern=DATE_PATTERN, description="Appointment date, YYYY-MM-DD.")
    time: str = Field(
        pattern=TIME_PATTERN,
        description="Start time, 24-hour HH:MM, one of the slots check_availability returned.",
    )
    name: str = Field(min_length=1, max_length=100, description="The caller's full name.")
    phone: str | None = Field(
        None, max_length=32, description="Contact phone; defaults to the number on this call."
    )
    email: str | None = Field(None, max_length=254, description="Contact email, if given.")


def _rfc3339(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _freebusy_error(reason: str) -> GoogleApiError:
    status = {"notFound": 404, "internalError": 500, "backendError": 500}.get(reason, 400)
    return GoogleApiError(status, reason, f"freebusy could not read the calendar ({reason})")


class CalendarTools:
    def __init__(
        self, google: GoogleApis, calendar_id: str, hours: BusinessHours, clock: Clock
    ) -> None:
        self._google = google
        self._calendar_id = calendar_id
        self._hours = hours
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}

    def tools(self) -> list[Tool]:
        h = self._hours
        where = (
            f"Times are local to {h.tz_name}; we are open {h.describe_days()}, "
            f"{h.describe_hours()}; appointments last {h.slot_minutes} minutes."
        )
        return [
            Tool(
                "check_availability",
                "List the free appointment start times on one date. Use it before proposing "
                "times to the caller. " + where,
                AvailabilityArgs,
                self.check_availability,
                timeout=12.0,
            ),
            Tool(
                "schedule_meeting",
                "Book an appointment at a free start time after the caller has confirmed the "
                "date, time and their name. Returns status 'confirmed' with the event id, or "
                "an error to relay to the caller. " + where,
                MeetingArgs,
                self.schedule_meeting,
                timeout=20.0,
            ),
        ]

    # -- check_availability ------------------------------------------------------------

    async def check_availability(self, args: AvailabilityArgs, ctx: ToolContext) -> ToolOutput:
        now = self._clock()
        try:
            day = parse_date(args.date)
            check_date(self._hours, day, now)
        except BookingRefused as exc:
            return refusal(str(exc))
        none: ToolOutput = {
            "date": day.isoformat(),
            "availableSlots": [],
            "message": NO_AVAILABILITY,
        }
        closed = closed_reason(self._hours, day)
        if closed:
            return {**none, "reason": closed}
        upcoming = free_slots(day_slots(self._hours, day), [], now)
        if not upcoming:
            return {**none, "reason": "The remaining appointment times today have passed."}
        window = working_window(self._hours, day)
        try:
            busy = await self._busy(Interval(max(window.start, upcoming[0].start), window.end))
        except GoogleApiError as exc:
            return google_failure(ctx, "check_availability", SERVICE, exc)
        free = free_slots(upcoming, busy, now)
        if not free:
            return none
        return {"date": day.isoformat(), "availableSlots": [s.label for s in free]}

    async def _busy(self, window: Interval) -> list[Interval]:
        body = {
            "timeMin": _rfc3339(window.start),
            "timeMax": _rfc3339(window.end),
            "timeZone": self._hours.tz_name,
            "items": [{"id": self._calendar_id}],
        }
        answer = await self._google.calendar(lambda s: s.freebusy().query(body=body))
        entry = (answer.get("calendars") or {}).get(self._calendar_id)
        if not isinstance(entry, dict):
            raise _freebusy_error("notFound")
        errors = entry.get("errors") or []
        if errors:
            raise _freebusy_error(str(errors[0].get("reason") or "unknown"))
        try:
            return parse_busy(entry.get("busy") or [])
        except (KeyError, ValueError) as exc:
            raise GoogleApiError(200, "badResponse", f"unreadable busy list: {exc}") from None

    # -- schedule_meeting --------------------------------------------------------------

    async def schedule_meeting(self, args: MeetingArgs, ctx: ToolContext) -> ToolOutput:
        name = " ".join(args.name.split())
        email = (args.email or "").strip() or None
        if not name:
            return refusal("A name is needed to book the appointment.")
        if email and not is_email_address(email):
            return refusal(f"'{email}' is not a valid email address.")
        try:
            day = parse_date(args.date)
            slot = booking_slot(self._hours, day, args.time, self._clock())
        except BookingRefused as exc:
            return refusal(str(exc))
        key = f"schedule_meeting|{self._calendar_id}|{slot.start.isoformat()}|{name.casefold()}"
        lock = self._locks.setdefault(self._calendar_id, asyncio.Lock())
        async with lock:
            earlier = ctx.memo.get(key)
            if earlier is not None:
                ctx.log.info("schedule_meeting: same booking again, returning the first event")
                return dict(earlier)
            phone = (args.phone or "").strip() or ctx.callee
            try:
                result = await self._book(slot, name=name, phone=phone, email=email, ctx=ctx)
            except GoogleApiError as exc:
                return google_failure(ctx, "schedule_meeting", SERVICE, exc)
            if result.get("status") == "confirmed":
                ctx.memo[key] = result
                ctx.log.bind(eventId=result["eventId"]).info(
                    "booked {} {}", day.isoformat(), slot.label
                )
            return dict(result)

    def _taken(self, slot: Slot) -> ToolOutput:
        day = self._hours.local(slot.start).date().isoformat()
        return refusal(
            f"{slot.label} on {day} is already taken. Offer another time from check_availability."
        )

    async def _book(
        self, slot: Slot, *, name: str, phone: str, email: str | None, ctx: ToolContext
    ) -> ToolOutput:
        busy = await self._busy(slot.interval)
        if any(slot.interval.overlaps(b) for b in busy):
            own = await self._own_event(slot, name, ctx.callback_id)
            if own is not None:
                return booking.confirmation(str(own["id"]), slot, self._hours)
            return self._taken(slot)
        for generation in range(MAX_GENERATIONS):
            event_id = booking.slot_event_id(self._calendar_id, slot, generation)
            body = booking.event_body(
                event_id,
                slot,
                self._hours,
                name=name,
                phone=phone,
                email=email,
                callback_id=ctx.callback_id,
            )
            try:
                event = await self._insert(body)
            except GoogleApiError as exc:
                if exc.status != 409:
                    raise
                existing = await self._get(event_id)
                if not booking.occupies(existing, slot):
                    continue  # the id belongs to a cancelled or moved event: next id
                if booking.is_own(existing, slot, name=name, callback_id=ctx.callback_id):
                    return booking.confirmation(event_id, slot, self._hours)
                ctx.log.info("schedule_meeting: slot claimed by another call first")
                return self._taken(slot)
            return booking.confirmation(str(event.get("id") or event_id), slot, self._hours)
        raise GoogleApiError(409, "duplicate", "no unused event id left for this slot")

    async def _insert(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._google.calendar(
            lambda s: s.events().insert(calendarId=self._calendar_id, body=body)
        )

    async def _get(self, event_id: str) -> dict[str, Any]:
        return await self._google.calendar(
            lambda s: s.events().get(calendarId=self._calendar_id, eventId=event_id)
        )

    async def _own_event(self, slot: Slot, name: str, callback_id: str) -> dict[str, Any] | None:
        """An event this call already created for the slot (a retry after a lost answer)."""
        answer = await self._google.calendar(
            lambda s: s.events().list(
                calendarId=self._calendar_id,
                timeMin=_rfc3339(slot.start),
                timeMax=_rfc3339(slot.end),
                privateExtendedProperty=f"callbackId={callback_id}",
                singleEvents=True,
                maxResults=10,
            )
        )
        for event in answer.get("items") or []:
            if isinstance(event, dict) and booking.is_own(
                event, slot, name=name, callback_id=callback_id
            ):
                return event
        return None
