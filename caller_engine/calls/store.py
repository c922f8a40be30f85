"""Where call records live. The interface every store implements, and the in-memory one."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from caller_engine.calls import mutations
from caller_engine.calls.models import CallRecord, DncEntry, StatusEvent, utcnow
from caller_engine.calls.result import CallResult
from caller_engine.calls.transfer import Transfer
from caller_engine.guardrails.policy import Admission, admit
from caller_engine.results.build import complete_from_record
from caller_engine.results.rules import ResultSource, takes_result


class Saved(enum.IntEnum):
    """What became of a result given to `save_result`; false when it was not kept."""

    DROPPED = 0  # the call is unknown or already has its result
    KEPT = 1  # kept, with nowhere to deliver it
    QUEUED = 2  # kept, and its delivery is queued in the outbox


class DuplicateCall(Exception):
    def __init__(self, existing: CallRecord) -> None:
        super().__init__(existing.callback_id)
        self.existing = existing


class CallStore(Protocol):
    async def create(self, record: CallRecord, admission: Admission | None = None) -> None:
        """Insert; raise DuplicateCall when the callbackId exists (unless that attempt failed).
        With an admission, a new call is first checked against it in the same transaction
        (the do-not-call list, calling hours, the frequency cap): CallRefused, nothing kept."""

    async def get(self, callback_id: str) -> CallRecord | None: ...

    async def find_by_sid(self, call_sid: str) -> CallRecord | None: ...

    async def dialed(self, callback_id: str, call_sid: str, status: str) -> CallRecord | None:
        """Record the CallSid Twilio gave; the updated record."""

    async def dial_failed(self, callback_id: str, error: dict[str, Any]) -> None: ...

    async def add_status(
        self, call_sid: str, event: StatusEvent, callback_id: str | None = None
    ) -> CallRecord | None:
        """Merge a status callback; the updated record, or None for an unknown call.
        `callback_id` (from our callback URL) is authoritative: the call it names takes the
        callback, and its CallSid, unless that call already carries another CallSid."""

    async def set_answered_by(
        self, call_sid: str, answered_by: str, callback_id: str | None = None
    ) -> CallRecord | None:
        """Keep the answering-machine verdict; matched like `add_status`."""

    async def stream_started(self, callback_id: str, stream_sid: str) -> CallRecord | None:
        """Record the media stream's start; the updated record (None for an unknown call)."""

    async def stream_stopped(self, callback_id: str) -> None: ...

    async def set_transfer(self, callback_id: str, transfer: Transfer) -> None:
        """Keep the latest state of the call's hand-off to a person."""

    async def save_result(
        self,
        result: CallResult,
        *,
        source: ResultSource = "bridge",
        default_url: str | None = None,
    ) -> Saved:
        """Keep the post-call result (transcript, summary, tool calls, metrics), completed
        from the record (results.build), and queue its delivery to the call's
        resultWebhookUrl or `default_url` (stores with an outbox). DROPPED (false) when the
        call is unknown or already has its result (see results.rules)."""

    async def list_calls(
        self,
        *,
        statuses: Sequence[str] = (),
        since: datetime | None = None,
        before: tuple[datetime, str] | None = None,
        limit: int = 50,
    ) -> list[CallRecord]:
        """Most recent first; `before` is the (created_at, callback_id) of the last seen."""

    async def ping(self) -> bool:
        """Whether the store answers now (within a couple of seconds)."""

    async def dnc_add(self, entry: DncEntry) -> tuple[DncEntry, bool]:
        """List a number: (the entry as kept, whether it was new). A number already listed
        keeps its first entry; only an `api` listing with a reason replaces the reason."""

    async def dnc_get(self, number: str) -> DncEntry | None: ...

    async def dnc_remove(self, number: str) -> bool: ...

    async def dnc_list(self, *, after: str | None = None, limit: int = 100) -> list[DncEntry]:
        """In number order, from the first number after `after`."""

    async def close(self) -> None: ...


def merged_listing(existing: DncEntry | None, entry: DncEntry) -> DncEntry:
    """What listing `entry` leaves on the list when `existing` is already there."""
    if existing is None:
        return entry
    if entry.source == "api" and entry.reason and entry.reason != existing.reason:
        return replace(existing, reason=entry.reason)
    return existing


class MemoryCallStore:
    """Process-local store; one instance, nothing survives a restart."""

    def __init__(self) -> None:
        self._by_id: dict[str, CallRecord] = {}
        self._sid_to_id: dict[str, str] = {}
        self._dnc: dict[str, DncEntry] = {}
        self._lock = asyncio.Lock()

    async def create(self, record: CallRecord, admission: Admission | None = None) -> None:
        async with self._lock:
            existing = self._by_id.get(record.callback_id)
            if existing is not None and existing.status != "dial-failed":
                raise DuplicateCall(existing)
            if admission is not None:
                dialed = [
                    r.created_at
                    for r in self._by_id.values()
                    if r.to == record.to
                    and r.status != "dial-failed"
                    and r.callback_id != record.callback_id
                ]
                refusal = admit(
                    admission, listed=record.to in self._dnc, dialed=dialed, now=record.created_at
                )
                if refusal is not None:
                    raise refusal
            self._by_id[record.callback_id] = record

    async def dnc_add(self, entry: DncEntry) -> tuple[DncEntry, bool]:
        async with self._lock:
            existing = self._dnc.get(entry.number)
            kept = self._dnc[entry.number] = merged_listing(existing, entry)
            return kept, existing is None

    async def dnc_get(self, number: str) -> DncEntry | None:
        return self._dnc.get(number)

    async def dnc_remove(self, number: str) -> bool:
        async with self._lock:
            return self._dnc.pop(number, None) is not None

    async def dnc_list(self, *, after: str | None = None, limit: int = 100) -> list[DncEntry]:
        numbers = sorted(n for n in self._dnc if after is None or n > after)
        return [self._dnc[n] for n in numbers[:limit]]

    async def get(self, callback_id: str) -> CallRecord | None:
        return self._by_id.get(callback_id)

    async def find_by_sid(self, call_sid: str) -> CallRecord | None:
        callback_id = self._sid_to_id.get(call_sid)
        return self._by_id.get(callback_id) if callback_id else None

    async def dialed(self, callback_id: str, call_sid: str, status: str) -> CallRecord | None:
        record = self._by_id[callback_id]
        record.call_sid = call_sid
        if record.status == "pending":
            record.status = status
        self._sid_to_id[call_sid] = callback_id
        return record

    async def dial_failed(self, callback_id: str, error: dict[str, Any]) -> None:
        record = self._by_id[callback_id]
        record.status = "dial-failed"
        record.error = error
        record.ended_at = utcnow()

    def _callback_record(self, call_sid: str, callback_id: str | None) -> CallRecord | None:
        """The call a Twilio callback is about (see SqlCallStore._change_callback)."""
        if not call_sid:
            return None
        record = self._by_id.get(callback_id) if callback_id else None
        if record is None or not mutations.owns_sid(record, call_sid):
            record = self._by_id.get(self._sid_to_id.get(call_sid, ""))
        if record is not None and mutations.attach_sid(record, call_sid):
            self._sid_to_id[call_sid] = record.callback_id
        return record

    async def add_status(
        self, call_sid: str, event: StatusEvent, callback_id: str | None = None
    ) -> CallRecord | None:
        record = self._callback_record(call_sid, callback_id)
        if record is not None:
            mutations.apply_status(record, event, utcnow())
        return record

    async def set_answered_by(
        self, call_sid: str, answered_by: str, callback_id: str | None = None
    ) -> CallRecord | None:
        record = self._callback_record(call_sid, callback_id)
        if record is not None:
            mutations.apply_answered_by(record, answered_by)
        return record

    async def stream_started(self, callback_id: str, stream_sid: str) -> CallRecord | None:
        record = self._by_id.get(callback_id)
        if record is not None:
            record.stream_sid = stream_sid
            record.stream_started_at = utcnow()
        return record

    async def stream_stopped(self, callback_id: str) -> None:
        record = self._by_id.get(callback_id)
        if record is not None:
            record.stream_stopped_at = utcnow()

    async def set_transfer(self, callback_id: str, transfer: Transfer) -> None:
        record = self._by_id.get(callback_id)
        if record is not None:
            record.transfer = transfer

    async def save_result(
        self,
        result: CallResult,
        *,
        source: ResultSource = "bridge",
        default_url: str | None = None,
    ) -> Saved:
        """Keeps the result; this store has no outbox, so nothing is delivered."""
        record = self._by_id.get(result.callbackId)
        if record is None or not takes_result(record.result_source, False, source):
            return Saved.DROPPED
        complete_from_record(result, record)
        record.result = result
        record.result_source = source
        return Saved.KEPT

    async def list_calls(
        self,
        *,
        statuses: Sequence[str] = (),
        since: datetime | None = None,
        before: tuple[datetime, str] | None = None,
        limit: int = 50,
    ) -> list[CallRecord]:
        rows = sorted(
            self._by_id.values(), key=lambda r: (r.created_at, r.callback_id), reverse=True
        )
        return [
            r
            for r in rows
            if (not statuses or r.status in statuses)
            and (since is None or r.created_at >= since)
            and (before is None or (r.created_at, r.callback_id) < before)
        ][:limit]

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None
