"""Call control: dial through Twilio, follow status and answering-machine callbacks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from caller_engine.calls.models import MACHINE_ANSWERS, CallRecord, InitiateRequest, utcnow
from caller_engine.calls.pending import PendingWrites
from caller_engine.calls.placed import PlacedCalls
from caller_engine.calls.result import CallResult, ResultSink
from caller_engine.calls.status import event_from_params
from caller_engine.calls.store import CallStore, DuplicateCall, Saved
from caller_engine.config import Settings
from caller_engine.guardrails.policy import Admission, CallingHours, CallRefused
from caller_engine.logging import call_logger
from caller_engine.metrics import Metrics
from caller_engine.results.build import result_from_record
from caller_engine.results.rules import ResultSource
from caller_engine.telephony.rest import (
    CALLBACK_RETRY,
    CallRequest,
    TelephonyError,
    TwilioGateway,
)

AnsweredByListener = Callable[[CallRecord, str], Awaitable[None]]
EndedListener = Callable[[CallRecord], Awaitable[None]]

# How long a duplicate initiate waits for a racing first request to finish dialing.
DUPLICATE_WAIT = 15.0
DUPLICATE_POLL = 0.05


class CallConflict(Exception):
    """The callbackId exists for a different call."""


@dataclass(frozen=True, slots=True)
class InitiateOutcome:
    record: CallRecord
    duplicate: bool


class CallService:
    def __init__(
        self,
        settings: Settings,
        gateway: TwilioGateway,
        store: CallStore,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """`clock`: the wall clock calling hours are judged by."""
        self.settings = settings
        self.gateway = gateway
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.hours = CallingHours(settings.calling_window, settings.allow_calling_hours_override)
        self._answered_by_listeners: list[AnsweredByListener] = []
        self._ended_listeners: list[EndedListener] = []
        self._sinks: list[ResultSink] = []
        self._delivery_queued: list[Callable[[], None]] = []
        self.duplicate_wait = DUPLICATE_WAIT
        # Writes the database could not take now (it is down): retried until stored.
        self.pending = PendingWrites(limit=settings.pending_writes_limit)
        # What the stream's start needs of the calls placed here, without reading it back.
        self.placed = PlacedCalls()

    def add_sink(self, sink: ResultSink) -> None:
        self._sinks.append(sink)

    def on_delivery_queued(self, listener: Callable[[], None]) -> None:
        """Called (it must not block) when a kept result's delivery is queued."""
        self._delivery_queued.append(listener)

    async def finish(self, result: CallResult, *, source: ResultSource = "bridge") -> bool:
        """A call is over and post-processed: keep its result, queue its delivery to the
        orchestrator and hand it on. False (and nothing handed on) when the call already
        has its result (see results.rules for which one wins), or when the database is
        unavailable: then it is kept and handed on once the database is back."""
        kept: list[bool] = []

        async def write() -> None:
            kept.append(await self._finish(result, source))

        await self.pending.attempt(f"{source} result", result.callbackId, write)
        return bool(kept and kept[0])

    async def _finish(self, result: CallResult, source: ResultSource) -> bool:
        saved = await self.store.save_result(
            result, source=source, default_url=self.settings.result_webhook_url
        )
        if not saved:
            return False
        if saved is Saved.QUEUED:
            for listener in self._delivery_queued:
                listener()
        for sink in self._sinks:
            await sink.publish(result)
        return True

    async def finish_from_record(
        self, record: CallRecord, *, error: dict[str, Any] | None = None
    ) -> bool:
        """Finish a call the bridge did not carry (or never reported) from its record."""
        voicemail = record.answered_by in MACHINE_ANSWERS
        result = result_from_record(record, voicemail=voicemail, error=error)
        if result is None:
            return False
        if record.stream_started_at is not None:
            # An opt-out during the call is on the do-not-call list even when the bridge's
            # result never came.
            listed = await self.store.dnc_get(record.to)
            if listed is not None and listed.source == "opt_out":
                result.optedOut = listed.callback_id == record.callback_id
        return await self.finish(result, source="record")

    def on_answered_by(self, listener: AnsweredByListener) -> None:
        self._answered_by_listeners.append(listener)

    def on_ended(self, listener: EndedListener) -> None:
        """Called with the record when a status callback reports the call's end."""
        self._ended_listeners.append(listener)

    def _urls(self, callback_id: str) -> tuple[str, str, str]:
        q = "?callbackId=" + quote(callback_id, safe="")
        s = self.settings
        return (
            s.public_url("/twiml/outbound" + q),
            s.public_url("/webhooks/call-status" + q) + CALLBACK_RETRY,
            s.public_url("/webhooks/amd" + q) + CALLBACK_RETRY,
        )

    def _admission(self, req: InitiateRequest) -> tuple[Admission, bool]:
        """What the call must pass, and whether its calling hours were overridden."""
        decision = self.hours.decide(
            req.to,
            self.clock(),
            callee_timezone=req.callee_timezone,
            ignore=req.ignore_calling_hours,
        )
        s = self.settings

        def open_from(at: datetime) -> datetime:
            if decision.overridden:
                return at
            return self.hours.adjust(req.to, at, req.callee_timezone)

        admission = Admission(
            hours=decision.refusal,
            max_calls=s.max_calls_per_number,
            window=timedelta(seconds=s.frequency_window),
            open_from=open_from,
        )
        return admission, decision.overridden

    async def initiate(self, req: InitiateRequest) -> InitiateOutcome:
        """Dial once per callbackId. Raises CallRefused, CallConflict or TelephonyError."""
        admission, overridden = self._admission(req)
        record = CallRecord(
            callback_id=req.callback_id,
            to=req.to,
            record=req.record,
            agent=req.agent,
            result_webhook_url=req.result_webhook_url,
            callee_timezone=req.callee_timezone,
            ignore_calling_hours=overridden,
        )
        log = call_logger(req.callback_id)
        try:
            await self.store.create(record, admission)
        except CallRefused as refusal:
            log.bind(reason=refusal.reason).warning(
                "initiate refused ({}) to={}: {}", refusal.reason, _mask(req.to), refusal.message
            )
            if self.metrics is not None:
                self.metrics.initiate_refused.labels(refusal.reason).inc()
            raise
        except DuplicateCall as dup:
            if dup.existing.to != req.to:
                raise CallConflict(
                    f"callbackId {req.callback_id} already belongs to a call to another number"
                ) from None
            log.info("duplicate initiate; returning the existing call")
            existing = await self._settled(dup.existing)
            if existing.status == "dial-failed" and existing.error is not None:
                # The racing first attempt failed: answer as it did. A later retry may dial.
                error = existing.error
                raise TelephonyError(
                    error.get("code", "unexpected"),
                    str(error.get("message", "")),
                    int(error.get("httpStatus", 502)),
                ) from None
            return InitiateOutcome(existing, duplicate=True)
        twiml_url, status_url, amd_url = self._urls(req.callback_id)
        try:
            created = await self.gateway.create_call(
                CallRequest(
                    to=req.to,
                    twiml_url=twiml_url,
                    status_callback=status_url,
                    amd_callback=amd_url,
                    time_limit=self.settings.call_time_limit,
                    record=req.record,
                )
            )
        except TelephonyError as exc:
            error = {"code": exc.code, "message": exc.message, "httpStatus": exc.http_status}
            await self.pending.attempt(
                "failed dial",
                req.callback_id,
                lambda: self.store.dial_failed(req.callback_id, error),
            )
            log.opt(exception=exc.__cause__).warning(
                "Twilio refused the call: code={} {}", exc.code, exc.message
            )
            raise
        # The call exists now: answer with it even if the database just went away (the
        # CallSid is written when it is back; its callbacks find it by callbackId anyway).
        stored = await self.pending.attempt_returning(
            "CallSid",
            req.callback_id,
            lambda: self.store.dialed(req.callback_id, created.sid, created.status),
        )
        call_logger(req.callback_id, created.sid).info(
            "call created to={} status={}{}",
            _mask(req.to),
            created.status,
            " (calling hours overridden)" if overridden else "",
        )
        record.call_sid, record.status = created.sid, created.status
        self.placed.add(stored or record)
        return InitiateOutcome(stored or record, duplicate=False)

    async def _settled(self, record: CallRecord) -> CallRecord:
        """A duplicate that races the first request waits until that one has dialed (or
        failed), so both answer with the same CallSid; bounded by DUPLICATE_WAIT seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.duplicate_wait
        while record.status == "pending" and loop.time() < deadline:
            await asyncio.sleep(DUPLICATE_POLL)
            record = await self.store.get(record.callback_id) or record
        return record

    async def on_status(
        self, params: Mapping[str, str], callback_id: str | None = None
    ) -> CallRecord | None:
        """Merge a status callback. `callback_id` is the one in the callback's URL. A call
        that ends without a media stream gets its result here, built from the record."""
        event = event_from_params(params)
        call_sid = params.get("CallSid", "")
        record = await self.store.add_status(call_sid, event, callback_id)
        log = call_logger(record.callback_id if record else callback_id, call_sid)
        log.bind(**event.fields).info(
            "status {} seq={} -> current {}",
            event.status or "?",
            event.sequence,
            record.status if record else "unknown call",
        )
        if (
            record is not None
            and record.is_final
            and record.stream_started_at is None
            and record.result is None
        ):
            await self.finish_from_record(record)
        if record is not None and record.is_final:
            for listener in self._ended_listeners:
                await listener(record)
        return record

    async def on_amd(
        self, params: Mapping[str, str], callback_id: str | None = None
    ) -> CallRecord | None:
        call_sid = params.get("CallSid", "")
        answered_by = params.get("AnsweredBy", "unknown")
        record = await self.store.set_answered_by(call_sid, answered_by, callback_id)
        if record is not None:
            self.placed.forget(record.callback_id)  # the stream's start reads the verdict
        log = call_logger(record.callback_id if record else callback_id, call_sid)
        log.info(
            "answered by {} (detection {} ms)",
            answered_by,
            params.get("MachineDetectionDuration", "?"),
        )
        if record is not None:
            for listener in self._answered_by_listeners:
                await listener(record, answered_by)
        return record


def _mask(number: str) -> str:
    """Keep phone numbers out of logs beyond their last digits."""
    return number[:2] + "…" + number[-4:] if len(number) > 6 else "…"
