"""Ordering of Twilio status callbacks, which can arrive late, twice or out of order. Pure."""

from __future__ import annotations

from collections.abc import Mapping

from caller_engine.calls.models import TERMINAL_STATUSES, StatusEvent

# Fields of a status callback worth keeping (and logging) besides CallStatus/SequenceNumber.
KEPT_FIELDS = (
    "SipResponseCode",
    "CallDuration",
    "ErrorCode",
    "ErrorMessage",
    "RecordingUrl",
    "RecordingSid",
    "RecordingDuration",
    "AnsweredBy",
    "CallbackSource",
)

# Progress order, used when a callback carries no SequenceNumber.
_RANK = {"queued": 0, "initiated": 1, "ringing": 2, "in-progress": 3}


def event_from_params(params: Mapping[str, str]) -> StatusEvent:
    seq_raw = params.get("SequenceNumber")
    try:
        sequence: int | None = int(seq_raw) if seq_raw not in (None, "") else None
    except ValueError:
        sequence = None
    return StatusEvent(
        status=params.get("CallStatus", "").strip().lower(),
        sequence=sequence,
        timestamp=params.get("Timestamp", ""),
        fields={k: params[k] for k in KEPT_FIELDS if params.get(k)},
    )


def _key(event: StatusEvent) -> tuple[int, int]:
    rank = 10 if event.status in TERMINAL_STATUSES else _RANK.get(event.status, 5)
    return (event.sequence if event.sequence is not None else 1_000_000 + rank, rank)


def merge_status(history: list[StatusEvent], event: StatusEvent) -> bool:
    """Insert `event` into `history` in sequence order. False for a duplicate."""
    for seen in history:
        if seen.status == event.status and seen.sequence == event.sequence:
            return False
    history.append(event)
    history.sort(key=_key)
    return True


def current_status(history: list[StatusEvent]) -> str | None:
    """The latest state: a terminal status, once seen, is never undone by a late callback."""
    if not history:
        return None
    for event in reversed(history):
        if event.status in TERMINAL_STATUSES:
            return event.status
    return history[-1].status
