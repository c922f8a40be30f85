"""Calendar event bodies and slot-claim ids for appointments (pure).

Every booking of a slot uses a deterministic event id derived from the calendar and the
slot's start instant. Google Calendar accepts client-chosen ids (base32hex, 5-1024
characters) and answers 409 `duplicate` when the id exists on the calendar — including ids
of deleted events — so two processes racing for one slot cannot both create an event. A
`generation` counter moves to a fresh id when the existing event is stale (cancelled or
moved elsewhere).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

from caller_engine.tools.slots import BusinessHours, Slot, parse_instant

SOURCE = "caller-engine"


def slot_event_id(calendar_id: str, slot: Slot, generation: int = 0) -> str:
    """A valid Calendar event id (32 base32hex characters) for one slot."""
    key = f"{calendar_id}|{slot.start.isoformat()}|{generation}".encode()
    digest = hashlib.sha256(key).digest()[:20]
    return base64.b32hexencode(digest).decode("ascii").lower()


def summary_for(name: str) -> str:
    return f"Appointment - {name}"


def event_body(
    event_id: str,
    slot: Slot,
    hours: BusinessHours,
    *,
    name: str,
    phone: str,
    email: str | None,
    callback_id: str,
) -> dict[str, Any]:
    lines = [f"Name: {name}", f"Phone: {phone}"]
    if email:
        lines.append(f"Email: {email}")
    lines.append(f"Booked by phone; callbackId: {callback_id}")
    return {
        "id": event_id,
        "summary": summary_for(name),
        "description": "\n".join(lines),
        "start": {"dateTime": hours.local(slot.start).isoformat(), "timeZone": hours.tz_name},
        "end": {"dateTime": hours.local(slot.end).isoformat(), "timeZone": hours.tz_name},
        "extendedProperties": {"private": {"callbackId": callback_id, "source": SOURCE}},
    }


def _start_of(event: Mapping[str, Any]) -> str | None:
    start = event.get("start")
    if isinstance(start, Mapping) and isinstance(start.get("dateTime"), str):
        return str(start["dateTime"])
    return None


def occupies(event: Mapping[str, Any], slot: Slot) -> bool:
    """True when the event is live and starts at the slot's start."""
    if event.get("status") == "cancelled":
        return False
    start = _start_of(event)
    try:
        return start is not None and parse_instant(start) == slot.start
    except ValueError:
        return False


def is_own(event: Mapping[str, Any], slot: Slot, *, name: str, callback_id: str) -> bool:
    """The event this call already booked for this slot and person."""
    private = (event.get("extendedProperties") or {}).get("private") or {}
    return (
        occupies(event, slot)
        and private.get("callbackId") == callback_id
        and event.get("summary") == summary_for(name)
    )


def confirmation(event_id: str, slot: Slot, hours: BusinessHours) -> dict[str, Any]:
    return {
        "status": "confirmed",
        "eventId": event_id,
        "startTime": hours.local(slot.start).isoformat(),
        "endTime": hours.local(slot.end).isoformat(),
    }
