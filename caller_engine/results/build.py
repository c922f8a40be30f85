"""Results from the call record: built for calls the bridge never carried, completed for
those it did. Pure."""

from __future__ import annotations

from typing import Any

from caller_engine.calls.codec import event_flat, iso
from caller_engine.calls.models import MACHINE_ANSWERS, CallRecord
from caller_engine.calls.result import CallResult, FinalStatus

NO_STREAM = {"code": "no_stream", "message": "the call was answered but no media stream started"}


_FINAL: dict[str, FinalStatus] = {
    "completed": "completed",
    "busy": "busy",
    "no-answer": "no-answer",
    "failed": "failed",
    "canceled": "canceled",
}


def final_status(record: CallRecord, *, voicemail: bool) -> FinalStatus | None:
    """The result status of an ended call; None while it has not ended."""
    status = _FINAL.get(record.status)
    if status == "completed" and voicemail:
        return "voicemail"
    return status


def result_from_record(
    record: CallRecord, *, voicemail: bool, error: dict[str, Any] | None = None
) -> CallResult | None:
    """The result of an ended call from what the record knows (no transcript, no summary).
    None while the call has not ended."""
    status = final_status(record, voicemail=voicemail)
    if status is None:
        return None
    if error is None:
        error = record.error
    if error is None and status == "completed" and record.stream_started_at is None:
        error = NO_STREAM
    return CallResult(
        callbackId=record.callback_id,
        callSid=record.call_sid,
        to=record.to,
        status=status,
        answeredBy=record.answered_by,
        startedAt=iso(record.answered_at),
        endedAt=iso(record.ended_at),
        duration=float(record.duration) if record.duration is not None else None,
        statusHistory=[event_flat(e) for e in record.status_history],
        recordingUrl=record.recording_url,
        recordingSid=record.recording_sid,
        error=error,
        metadata=dict(record.agent.metadata),
        transfer=record.transfer,
    )


def complete_from_record(result: CallResult, record: CallRecord) -> None:
    """Fill in, as the result is stored, what only the record knows: the status callbacks,
    the recording, and an answering-machine verdict the bridge did not see."""
    if not result.statusHistory:
        result.statusHistory = [event_flat(e) for e in record.status_history]
    result.recordingUrl = result.recordingUrl or record.recording_url
    result.recordingSid = result.recordingSid or record.recording_sid
    if result.answeredBy is None and record.answered_by is not None:
        result.answeredBy = record.answered_by
        if result.status == "completed" and record.answered_by in MACHINE_ANSWERS:
            result.status = "voicemail"
