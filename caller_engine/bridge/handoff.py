"""Hand-off of a live call to a person (`transfer_call`), on the bridge's side.

1. The tool asks (`begin`); the agent's "connecting you now" plays out (marks, as for
   `end_call`).
2. `redirect`: Twilio's call update replaces the `<Connect><Stream>` with a `<Dial>` of the
   target; the whisper and the dial action come back to `web.transfer`. The update also
   raises the call's TimeLimit: Twilio's limit covers the whole call, the person-to-person
   part included, so CALL_TIME_LIMIT would otherwise cut it.
3. Its session is parked here by CallSid as soon as Twilio took the update (the dial may
   end before the old stream has wound down); the media stream ends.
4. The whisper screen (`accepted`) and the dial action (`dial_ended`) settle the outcome.
   Connected: the session stays parked until Twilio reports the call's end (`call_ended`),
   then its result is built. Not connected: the action answers `<Connect><Stream>` again,
   and the new stream `adopt`s the parked session (transcript, tools, metrics), replays
   the conversation into a pre-warmed model and tells it to offer a call-back.

A parked session lives in this process; a dial action or stream that reaches another
instance still works from the record, without the earlier conversation.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from caller_engine.calls.models import CallRecord
from caller_engine.calls.transfer import Transfer, TransferStatus, TransferTarget, dial_outcome
from caller_engine.logging import call_logger
from caller_engine.telephony import twiml
from caller_engine.telephony.rest import TelephonyError
from caller_engine.telephony.signature import transfer_token

if TYPE_CHECKING:
    from caller_engine.bridge.bridge import Bridge
    from caller_engine.bridge.session import CallSession

# A parked call whose end Twilio never reports is finished after its longest possible life.
PARK_MARGIN = 120.0
MAX_TIME_LIMIT = 86_400

_NOT_CONNECTED = {
    "no-answer": "nobody answered",
    "busy": "the line was busy",
    "declined": "the person could not take the call",
    "failed": "the call to them could not be placed",
    "canceled": "the call to them was canceled",
}


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat()


@dataclass
class Handoff:
    """One transfer of a call, as the bridge follows it."""

    target: TransferTarget
    transfer: Transfer
    redirected: bool = False
    connected_wall: float | None = None
    ended_wall: float | None = None

    @property
    def due(self) -> bool:
        """Asked for and not yet sent to Twilio."""
        return not self.redirected and not self.transfer.final

    @property
    def connected(self) -> bool:
        return self.transfer.status == "connected"

    @property
    def human_seconds(self) -> float | None:
        if self.connected_wall is None or self.ended_wall is None:
            return None
        return max(0.0, self.ended_wall - self.connected_wall)


def welcome_back(instructions: str, transfer: Transfer) -> str:
    """Instructions for the first response after a transfer that did not connect."""
    why = _NOT_CONNECTED.get(transfer.status, "it did not go through")
    return (
        f"{instructions}\n\nYou tried to transfer the caller to {transfer.target}, but {why}. "
        "The caller is back on the line with you. Tell them nobody was available right now, "
        "and offer to book a call-back or to take a message."
    )


class Handoffs:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self._parked: dict[str, tuple[CallSession, asyncio.TimerHandle]] = {}
        # Sessions whose call went on elsewhere (adopted by a new stream) or was finished
        # from here: their own end of stream must not finish the call again.
        self._done: weakref.WeakSet[CallSession] = weakref.WeakSet()

    def __len__(self) -> int:
        return len(self._parked)

    # -- in the call -------------------------------------------------------------------

    def begin(
        self, session: CallSession, target: TransferTarget, reason: str, summary: str
    ) -> Handoff:
        transfer = Transfer(
            target=target.name,
            number=target.number,
            reason=reason,
            summary=summary,
            requestedAt=_iso(time.time()),
        )
        session.transcript.system(f"Transfer to {target.name} requested", session.now())
        session.log.info("transfer to {} requested: {}", target.name, reason or "-")
        return Handoff(target, transfer)

    def _urls(self, call_sid: str, callback_id: str) -> tuple[str, str]:
        settings = self.bridge.settings
        query = urlencode(
            {
                "callbackId": callback_id,
                "token": transfer_token(settings.stream_secret, call_sid, callback_id),
            }
        )
        return (
            settings.public_url(f"/twiml/transfer/whisper?{query}"),
            settings.public_url(f"/twiml/transfer/done?{query}"),
        )

    def screen_url(self, call_sid: str, callback_id: str) -> str:
        whisper, _ = self._urls(call_sid, callback_id)
        return whisper.replace("/twiml/transfer/whisper?", "/twiml/transfer/screen?", 1)

    async def redirect(self, session: CallSession) -> bool:
        """Send the call to the `<Dial>`. False (the transfer failed, the call goes on with
        the agent) when Twilio refused the update."""
        handoff = session.handoff
        assert handoff is not None and session.call_sid is not None
        settings = self.bridge.settings
        whisper_url, action_url = self._urls(session.call_sid, session.callback_id)
        document = twiml.transfer_dial(
            number=handoff.target.number,
            caller_id=settings.twilio_phone_number,
            timeout=settings.transfer_ring_timeout,
            time_limit=settings.transfer_time_limit,
            whisper_url=whisper_url,
            action_url=action_url,
            hold_music_url=settings.transfer_hold_music_url,
        )
        # TimeLimit counts the whole call: what has gone by, the ring, then the person.
        elapsed = time.time() - session.started_wall
        limit = math.ceil(elapsed + PARK_MARGIN + settings.transfer_ring_timeout)
        limit = min(MAX_TIME_LIMIT, limit + settings.transfer_time_limit)
        handoff.redirected = True
        try:
            live = await self.bridge.gateway.redirect(session.call_sid, document, time_limit=limit)
        except TelephonyError as exc:
            session.log.warning("transfer to {} failed: Twilio {}", handoff.target.name, exc)
            await self._settle(session.callback_id, handoff, "failed", session)
            return False
        if not live:
            session.log.info("transfer: the call had already ended")
            await self._settle(session.callback_id, handoff, "canceled", session)
            return True
        session.log.info("call redirected to dial {}", handoff.target.name)
        self._hold(session)
        await self.bridge.store.set_transfer(session.callback_id, handoff.transfer)
        return True

    def failed_cue(self, handoff: Handoff) -> str:
        return (
            f"The transfer to {handoff.target.name} could not be started. Apologize, tell the "
            "caller nobody can be reached right now, and offer to book a call-back or take a "
            "message."
        )

    # -- while it rings ----------------------------------------------------------------

    def _hold(self, session: CallSession) -> None:
        assert session.call_sid is not None
        settings = self.bridge.settings
        life = settings.transfer_ring_timeout + settings.transfer_time_limit + PARK_MARGIN
        timer = session.loop.call_later(life, self._expire, session.call_sid)
        self._parked[session.call_sid] = (session, timer)

    def park(self, session: CallSession) -> bool:
        """A stream ended. True when its call is not over for the bridge: it is parked
        (being transferred) or went on elsewhere; False when its result is due now."""
        if session in self._done:
            return True
        entry = self._parked.get(session.call_sid) if session.call_sid else None
        return entry is not None and entry[0] is session

    def adopt(self, session: CallSession) -> bool:
        """A new stream of a call whose transfer did not connect: carry on its conversation."""
        call_sid = session.call_sid
        entry = self._parked.get(call_sid) if call_sid else None
        handoff = entry[0].handoff if entry is not None else None
        if entry is None or handoff is None or not handoff.transfer.final or handoff.connected:
            return False
        assert call_sid is not None
        del self._parked[call_sid]
        entry[1].cancel()
        parked = entry[0]
        self._done.add(parked)
        session.transcript = parked.transcript
        session.metrics = parked.metrics
        session.handoff = parked.handoff
        session.error = parked.error
        session.answered_by = parked.answered_by
        session.prior_ai = parked.ai_seconds()
        session.started_wall = parked.started_wall
        session.started_at = parked.started_at  # one timeline for the transcript
        session.log.info("back with the agent after the transfer ({})", handoff.transfer.status)
        return True

    def welcome_back(self, session: CallSession) -> str | None:
        handoff = session.handoff
        if session.config is None or handoff is None or not handoff.transfer.final:
            return None
        if handoff.connected or session.prior_ai == 0.0:
            return None
        return welcome_back(session.config.instructions, handoff.transfer)

    # -- Twilio reports ----------------------------------------------------------------

    def _session(self, call_sid: str | None) -> CallSession | None:
        entry = self._parked.get(call_sid) if call_sid else None
        return entry[0] if entry is not None else None

    def _transfer(self, record: CallRecord) -> tuple[Handoff | None, Transfer | None]:
        session = self._session(record.call_sid)
        handoff = session.handoff if session is not None else None
        return handoff, handoff.transfer if handoff is not None else record.transfer

    async def accepted(self, record: CallRecord) -> bool:
        """The person pressed 1 at the whisper: they are bridged to the caller. False when
        the transfer is already over (the caller hung up meanwhile)."""
        handoff, transfer = self._transfer(record)
        if transfer is None or transfer.final:
            return False
        now = time.time()
        transfer.status = "connected"
        transfer.connectedAt = _iso(now)
        if handoff is not None:
            handoff.connected_wall = now
            session = self._session(record.call_sid)
            if session is not None:
                session.transcript.system(
                    f"Transfer to {transfer.target}: connected",
                    session.loop.time() - session.started_at,
                )
        self.bridge.metrics.transfers.labels("connected").inc()
        call_logger(record.callback_id, record.call_sid).info(
            "transfer to {} accepted: connected", transfer.target
        )
        await self.bridge.store.set_transfer(record.callback_id, transfer)
        return True

    async def dial_ended(self, record: CallRecord, dial_call_status: str) -> Transfer | None:
        """The `<Dial>` ended: the transfer's outcome (None when the call has none)."""
        handoff, transfer = self._transfer(record)
        if transfer is None:
            return None
        log = call_logger(record.callback_id, record.call_sid)
        if transfer.status == "connected":
            if transfer.endedAt is None:
                await self._end_connected(record.callback_id, handoff, transfer, time.time())
            log.info("the transferred call ended ({})", dial_call_status)
            return transfer
        if transfer.final:
            return transfer
        status = dial_outcome(dial_call_status, accepted=False)
        session = self._session(record.call_sid)
        if handoff is not None and session is not None:
            await self._settle(record.callback_id, handoff, status, session)
        else:
            transfer.status = status
            transfer.endedAt = _iso(time.time())
            self.bridge.metrics.transfers.labels(status).inc()
            await self.bridge.store.set_transfer(record.callback_id, transfer)
        log.info("transfer to {} not connected: {}", transfer.target, status)
        return transfer

    async def call_ended(self, record: CallRecord) -> None:
        """Twilio reported the end of a call: finish a parked one."""
        call_sid = record.call_sid
        if call_sid is None:
            return
        entry = self._parked.pop(call_sid, None)
        if entry is None:
            return
        session, timer = entry
        timer.cancel()
        await self._close(session)

    async def _close(self, session: CallSession) -> None:
        self._done.add(session)
        handoff = session.handoff
        assert handoff is not None
        if handoff.connected and handoff.transfer.endedAt is None:
            await self._end_connected(session.callback_id, handoff, handoff.transfer, time.time())
        elif not handoff.transfer.final:
            # The caller hung up while it rang (Twilio sends no dial action then).
            await self._settle(session.callback_id, handoff, "canceled", session)
        self.bridge.post_call(session)

    def _expire(self, call_sid: str) -> None:
        entry = self._parked.pop(call_sid, None)
        if entry is not None:
            entry[0].log.warning("no end of the transferred call was reported; finishing it")
            task = asyncio.create_task(self._close(entry[0]))
            self.bridge.track(task)

    async def close(self) -> None:
        """Shutdown: finish every parked call with what is known."""
        entries = list(self._parked.values())
        self._parked.clear()
        for session, timer in entries:
            timer.cancel()
            await self._close(session)

    # -- state changes -----------------------------------------------------------------

    async def _settle(
        self, callback_id: str, handoff: Handoff, status: TransferStatus, session: CallSession
    ) -> None:
        now = time.time()
        transfer = handoff.transfer
        transfer.status = status
        transfer.endedAt = _iso(now)
        handoff.ended_wall = now
        session.transcript.system(
            f"Transfer to {transfer.target}: not connected ({status})",
            session.loop.time() - session.started_at,
        )
        self.bridge.metrics.transfers.labels(status).inc()
        await self.bridge.store.set_transfer(callback_id, transfer)

    async def _end_connected(
        self, callback_id: str, handoff: Handoff | None, transfer: Transfer, now: float
    ) -> None:
        transfer.endedAt = _iso(now)
        if handoff is not None:
            handoff.ended_wall = now
            if (seconds := handoff.human_seconds) is not None:
                self.bridge.metrics.transfer_human_seconds.observe(seconds)
        await self.bridge.store.set_transfer(callback_id, transfer)
