"""How each event changes a call record. Pure functions shared by the SQL store.

Each returns True when the record changed (False for duplicates and events that come too
late to matter), so stores write only what changed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from caller_engine.calls.models import CallRecord, StatusEvent
from caller_engine.calls.status import current_status, merge_status


def apply_dialed(record: CallRecord, call_sid: str, status: str) -> bool:
    record.call_sid = call_sid
    if record.status == "pending":
        record.status = status
    return True


def owns_sid(record: CallRecord, call_sid: str) -> bool:
    """Whether a callback about `call_sid` can belong to this call: it carries that CallSid
    or none yet (the callback beat our write of the create answer)."""
    return record.call_sid is None or record.call_sid == call_sid


def attach_sid(record: CallRecord, call_sid: str) -> bool:
    """Give the call the CallSid of a callback that arrived before the create answer."""
    if record.call_sid is not None:
        return False
    record.call_sid = call_sid
    if record.status == "pending":
        record.status = "queued"
    return True


def apply_dial_failed(record: CallRecord, error: dict[str, Any], now: datetime) -> bool:
    record.status = "dial-failed"
    record.error = error
    record.ended_at = now
    return True


def apply_status(record: CallRecord, event: StatusEvent, now: datetime) -> bool:
    if not merge_status(record.status_history, event):
        return False
    record.status = current_status(record.status_history) or record.status
    if event.status == "in-progress" and record.answered_at is None:
        record.answered_at = now
    if record.is_final and record.ended_at is None:
        record.ended_at = now
    fields = event.fields
    if fields.get("CallDuration", "").isdigit():
        record.duration = int(fields["CallDuration"])
    record.recording_url = fields.get("RecordingUrl", record.recording_url)
    record.recording_sid = fields.get("RecordingSid", record.recording_sid)
    if fields.get("AnsweredBy") and record.answered_by is None:
        record.answered_by = fields["AnsweredBy"]
    if fields.get("ErrorCode") and record.error is None:
        record.error = {"code": fields["ErrorCode"], "message": fields.get("ErrorMessage", "")}
    return True


def apply_answered_by(record: CallRecord, answered_by: str) -> bool:
    if record.answered_by == answered_by:
        return False
    record.answered_by = answered_by
    return True


def apply_stream_started(record: CallRecord, stream_sid: str, now: datetime) -> bool:
    record.stream_sid = stream_sid
    if record.stream_started_at is None:
        record.stream_started_at = now
    return True


def apply_stream_stopped(record: CallRecord, now: datetime) -> bool:
    if record.stream_stopped_at is not None:
        return False
    record.stream_stopped_at = now
    return True
