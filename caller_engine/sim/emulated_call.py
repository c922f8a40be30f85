"""One call as the emulated phone network carries it; also the callee's handle on the call."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from caller_engine.sim.callee import Callee, Outcome, Utterance
from caller_engine.sim.twilio.media import TwilioMediaClient
from caller_engine.sim.twilio.rest import EmulatedCall
from caller_engine.sim.twilio.twiml_reader import Verb
from caller_engine.sim.twilio.webhooks import WebhookRecord

if TYPE_CHECKING:
    from caller_engine.sim.twilio.dial import DialLeg


class ActiveEmulatedCall:
    """One call as the network carries it; also the callee's handle on the call."""

    def __init__(self, call: EmulatedCall, callee: Callee) -> None:
        self.call = call
        self.callee = callee
        self.status = "queued"
        self.webhooks: list[WebhookRecord] = []
        self.twiml: str | None = None
        self.verbs: list[Verb] = []
        self.media: TwilioMediaClient | None = None
        self.streams: list[TwilioMediaClient] = []  # every media stream, in order
        self.legs: list[DialLeg] = []  # legs dialed by <Dial>
        self.dialing = asyncio.Event()  # set while a <Dial> rings or is bridged
        self.redirected = asyncio.Event()  # a REST update brought new TwiML
        self.limit_changed = asyncio.Event()  # a REST update changed the TimeLimit
        self.answered_by: str | None = None
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.duration: int | None = None
        self.ended_by: str | None = None
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.callee_error: BaseException | None = None
        self.utterances: list[Utterance] = []
        self.stream_started = asyncio.Event()
        self.finished = asyncio.Event()
        # set by the network
        self.hangup_requested = asyncio.Event()
        self.hangup_by: str | None = None  # "server" (REST) or "callee"
        self.amd_sending = False
        self._sequence = 0

    @property
    def sid(self) -> str:
        return self.call.sid

    @property
    def outcome(self) -> Outcome:
        return self.callee.outcome

    @property
    def status_callbacks(self) -> list[WebhookRecord]:
        return [w for w in self.webhooks if w.kind == "status"]

    @property
    def statuses_sent(self) -> list[str]:
        return [w.params["CallStatus"] for w in self.status_callbacks]

    @property
    def amd_callbacks(self) -> list[WebhookRecord]:
        return [w for w in self.webhooks if w.kind == "amd"]

    async def hang_up(self) -> None:
        """The callee hangs up (the network sends `stop` and completes the call)."""
        self.request_hangup("callee")

    def request_hangup(self, by: str) -> None:
        if not self.hangup_requested.is_set():
            self.hangup_by = by
            self.hangup_requested.set()

    def next_sequence(self) -> int:
        """SequenceNumber of the next status callback (from 0)."""
        sequence = self._sequence
        self._sequence += 1
        return sequence

    async def wait_stream(self, timeout: float) -> TwilioMediaClient:  # noqa: ASYNC109
        """The media client, once the stream is up."""
        await asyncio.wait_for(self.stream_started.wait(), timeout)
        assert self.media is not None
        return self.media
