"""Call records as the JSON the API answers (camelCase keys). Pure."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

from caller_engine.calls.codec import event_flat, iso
from caller_engine.calls.models import CallRecord, DncEntry
from caller_engine.results.state import DeliveryState


def delivery_json(delivery: DeliveryState | None) -> dict[str, Any] | None:
    if delivery is None:
        return None
    return {
        "state": delivery.state,
        "url": delivery.url,
        "attempts": delivery.attempts,
        "enqueuedAt": iso(delivery.enqueued_at),
        "nextAttemptAt": iso(delivery.next_attempt_at),
        "lastAttemptAt": iso(delivery.last_attempt_at),
        "deliveredAt": iso(delivery.delivered_at),
        "lastStatus": delivery.last_status,
        "lastError": delivery.last_error,
    }


def record_summary(record: CallRecord) -> dict[str, Any]:
    """The short form used in listings."""
    return {
        "callbackId": record.callback_id,
        "callSid": record.call_sid,
        "to": record.to,
        "status": record.status,
        "answeredBy": record.answered_by,
        "createdAt": iso(record.created_at),
        "endedAt": iso(record.ended_at),
        "duration": record.duration,
        "resultStatus": record.result.status if record.result else None,
        "delivery": record.delivery.state if record.delivery else None,
    }


def record_json(record: CallRecord) -> dict[str, Any]:
    """Everything the record holds."""
    return {
        "callbackId": record.callback_id,
        "callSid": record.call_sid,
        "to": record.to,
        "record": record.record,
        "agent": record.agent.model_dump(mode="json", exclude_none=True),
        "status": record.status,
        "statusHistory": [event_flat(e) for e in record.status_history],
        "answeredBy": record.answered_by,
        "createdAt": iso(record.created_at),
        "answeredAt": iso(record.answered_at),
        "streamSid": record.stream_sid,
        "streamStartedAt": iso(record.stream_started_at),
        "streamStoppedAt": iso(record.stream_stopped_at),
        "endedAt": iso(record.ended_at),
        "duration": record.duration,
        "recordingUrl": record.recording_url,
        "recordingSid": record.recording_sid,
        "error": record.error,
        "resultWebhookUrl": record.result_webhook_url,
        "calleeTimezone": record.callee_timezone,
        "ignoreCallingHours": record.ignore_calling_hours,
        "result": record.result.model_dump(mode="json") if record.result else None,
        "resultSource": record.result_source,
        "delivery": delivery_json(record.delivery),
        "transfer": record.transfer.model_dump(mode="json") if record.transfer else None,
    }


def encode_cursor(record: CallRecord) -> str:
    raw = f"{record.created_at.isoformat()}|{record.callback_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str] | None:
    """The (created_at, callbackId) a cursor points after; None when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, sep, callback_id = raw.partition("|")
        when = datetime.fromisoformat(at)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not sep or not callback_id or when.tzinfo is None:
        return None
    return when, callback_id


def dnc_json(entry: DncEntry) -> dict[str, Any]:
    return {
        "number": entry.number,
        "source": entry.source,
        "reason": entry.reason,
        "callbackId": entry.callback_id,
        "createdAt": iso(entry.created_at),
    }


def encode_number_cursor(number: str) -> str:
    return base64.urlsafe_b64encode(number.encode()).decode().rstrip("=")


def decode_number_cursor(cursor: str) -> str | None:
    """The number a do-not-call cursor points after; None when it is not one of ours."""
    try:
        number = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return number if number.startswith("+") and number[1:].isdigit() else None
