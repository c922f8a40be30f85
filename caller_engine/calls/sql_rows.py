"""Call records and delivery states to and from table rows. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from caller_engine.calls.codec import event_from_json, event_to_json
from caller_engine.calls.models import AgentOverrides, CallRecord, DncEntry
from caller_engine.calls.result import CallResult
from caller_engine.calls.transfer import Transfer
from caller_engine.results.state import DeliveryState


def record_values(record: CallRecord) -> dict[str, Any]:
    """Every stored column of a record except bookkeeping (updated_at, dial_attempts)."""
    return {
        "callback_id": record.callback_id,
        "call_sid": record.call_sid,
        "to_number": record.to,
        "record": record.record,
        "agent": record.agent.model_dump(mode="json"),
        "result_webhook_url": record.result_webhook_url,
        "status": record.status,
        "status_history": [event_to_json(e) for e in record.status_history],
        "answered_by": record.answered_by,
        "created_at": record.created_at,
        "answered_at": record.answered_at,
        "stream_started_at": record.stream_started_at,
        "stream_stopped_at": record.stream_stopped_at,
        "ended_at": record.ended_at,
        "duration": record.duration,
        "recording_url": record.recording_url,
        "recording_sid": record.recording_sid,
        "stream_sid": record.stream_sid,
        "error": record.error,
        "result": record.result.model_dump(mode="json") if record.result else None,
        "result_source": record.result_source,
        "transfer": record.transfer.model_dump(mode="json") if record.transfer else None,
        "callee_timezone": record.callee_timezone,
        "ignore_calling_hours": record.ignore_calling_hours,
    }


def record_from_row(row: Mapping[Any, Any], delivery: DeliveryState | None = None) -> CallRecord:
    result = row["result"]
    return CallRecord(
        callback_id=row["callback_id"],
        to=row["to_number"],
        record=bool(row["record"]),
        agent=AgentOverrides.model_validate(row["agent"] or {}),
        call_sid=row["call_sid"],
        status=row["status"],
        status_history=[event_from_json(e) for e in row["status_history"] or []],
        answered_by=row["answered_by"],
        created_at=row["created_at"],
        answered_at=row["answered_at"],
        ended_at=row["ended_at"],
        duration=row["duration"],
        recording_url=row["recording_url"],
        recording_sid=row["recording_sid"],
        error=row["error"],
        stream_sid=row["stream_sid"],
        stream_started_at=row["stream_started_at"],
        stream_stopped_at=row["stream_stopped_at"],
        result=CallResult.model_validate(result) if result is not None else None,
        result_webhook_url=row["result_webhook_url"],
        result_source=row["result_source"],
        delivery=delivery,
        callee_timezone=row["callee_timezone"],
        ignore_calling_hours=bool(row["ignore_calling_hours"]),
        transfer=Transfer.model_validate(row["transfer"]) if row["transfer"] else None,
    )


def dnc_values(entry: DncEntry) -> dict[str, Any]:
    return {
        "number": entry.number,
        "source": entry.source,
        "reason": entry.reason,
        "callback_id": entry.callback_id,
        "created_at": entry.created_at,
    }


def dnc_from_row(row: Mapping[Any, Any]) -> DncEntry:
    return DncEntry(
        number=row["number"],
        source=row["source"],
        reason=row["reason"],
        callback_id=row["callback_id"],
        created_at=row["created_at"],
    )


def delivery_from_row(row: Mapping[Any, Any], now: datetime) -> DeliveryState:
    state = row["state"]
    lease_until = row["lease_until"]
    if state == "pending" and lease_until is not None and lease_until > now:
        state = "delivering"
    return DeliveryState(
        state=state,
        url=row["url"],
        attempts=int(row["attempts"]),
        enqueued_at=row["enqueued_at"],
        next_attempt_at=row["next_attempt_at"] if row["state"] == "pending" else None,
        last_attempt_at=row["last_attempt_at"],
        delivered_at=row["delivered_at"],
        last_status=row["last_status"],
        last_error=row["last_error"],
    )
