"""Status events and times as JSON values. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from caller_engine.calls.models import StatusEvent


def event_to_json(event: StatusEvent) -> dict[str, Any]:
    return {
        "status": event.status,
        "sequence": event.sequence,
        "timestamp": event.timestamp,
        "fields": dict(event.fields),
    }


def event_from_json(data: Mapping[str, Any]) -> StatusEvent:
    sequence = data.get("sequence")
    return StatusEvent(
        status=str(data.get("status", "")),
        sequence=int(sequence) if sequence is not None else None,
        timestamp=str(data.get("timestamp", "")),
        fields={str(k): str(v) for k, v in (data.get("fields") or {}).items()},
    )


def iso(value: datetime | None) -> str | None:
    """UTC ISO 8601 with a Z, or None."""
    return value.isoformat().replace("+00:00", "Z") if value else None


def event_flat(event: StatusEvent) -> dict[str, Any]:
    """The shape of a status event in results and record views: Twilio's kept fields
    (CallDuration, SipResponseCode, …) next to status, sequence and timestamp."""
    return {
        "status": event.status,
        "sequence": event.sequence,
        "timestamp": event.timestamp,
        **event.fields,
    }
