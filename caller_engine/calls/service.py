"""Call control: dial through Twilio, follow status and answering-machine callbacks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from caller_engine.calls.models import CallRecord, InitiateRequest
from caller_engine.calls.result import CallResult, ResultSink
from caller_engine.calls.status import event_from_params
from caller_engine.calls.store import CallStore, DuplicateCall
from caller_engine.config import Settings
from caller_engine.logging import call_logger
from caller_engine.telephony.rest import CallRequest, TelephonyError, TwilioGateway

MACHINE_ANSWERS = frozenset(
    {"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax"}
)

AnsweredByListener = Callable[[CallRecord, str], Awaitable[None]]


class CallConflict(Exception):
    """The callbackId exists for a different call."""


@dataclass(frozen=True, slots=True)
class InitiateOutcome:
    record: CallRecord
    duplicate: bool


class CallService:
    def __init__(self, settings: Settings, gateway: TwilioGateway, store: CallStore) -> None:
        self.settings = settings
        self.gateway = gateway
        self.store = store
        self._answered_by_listeners: list[AnsweredByListener] = []
        self._sinks: list[ResultSink] = []

    def add_sink(self, sink: ResultSink) -> None:
        self._sinks.append(sink)

    async def finish(self, result: CallResult) -> None:
        """A call is over and post-processed: keep its result and hand it on."""
        await self.store.save_result(result)
        for sink in self._sinks:
            await sink.publish(result)

    def on_answered_by(self, listener: AnsweredByListener) -> None:
        self._answered_by_listeners.append(listener)

    def _urls(self, callback_id: str) -> tuple[str, str, str]:
        q = "?callbackId=" + quote(callback_id, safe="")
        s = self.settings
        return (
            s.public_url("/twiml/outbound" + q),
            s.public_url("/webhooks/call-status" + q),
            s.public_url("/webhooks/amd" + q),
        )

    async def initiate(self, req: InitiateRequest) -> InitiateOutcome:
        """Dial once per callbackId. Raises CallConflict or TelephonyError."""
        record = CallRecord(
            callback_id=req.callback_id, to=req.to, record=req.record, agent=req.agent
        )
        log = call_logger(req.callback_id)
        try:
            await self.store.create(record)
        except DuplicateCall as dup:
            if dup.existing.to != req.to:
                raise CallConflict(
                    f"callbackId {req.callback_id} already belongs to a call to another number"
                ) from None
            log.info("duplicate initiate; returning the existing call")
            return InitiateOutcome(dup.existing, duplicate=True)
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
            await self.store.dial_failed(
                req.callback_id, {"code": exc.code, "message": exc.message}
            )
            log.warning("Twilio refused the call: code={} {}", exc.code, exc.message)
            raise
        await self.store.dialed(req.callback_id, created.sid, created.status)
        call_logger(req.callback_id, created.sid).info(
            "call created to={} status={}", _mask(req.to), created.status
        )
        stored = await self.store.get(req.callback_id)
        return InitiateOutcome(stored or record, duplicate=False)

    async def on_status(self, params: Mapping[str, str]) -> CallRecord | None:
        event = event_from_params(params)
        call_sid = params.get("CallSid", "")
        record = await self.store.add_status(call_sid, event)
        log = call_logger(record.callback_id if record else params.get("callbackId"), call_sid)
        log.bind(**event.fields).info(
            "status {} seq={} -> current {}",
            event.status or "?",
            event.sequence,
            record.status if record else "unknown call",
        )
        return record

    async def on_amd(self, params: Mapping[str, str]) -> CallRecord | None:
        call_sid = params.get("CallSid", "")
        answered_by = params.get("AnsweredBy", "unknown")
        record = await self.store.set_answered_by(call_sid, answered_by)
        log = call_logger(record.callback_id if record else params.get("callbackId"), call_sid)
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
