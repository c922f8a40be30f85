"""`<Dial>` on the emulated phone network: a second leg to a person, its whisper and screen.

The network dials each `<Number>` to a `ScriptedPerson`. Once the person answers, the
`<Number url>` TwiML runs on their leg before the bridge, as on Twilio: `<Say>` is heard
(kept in `DialLeg.heard`), `<Gather>` collects the digits the person presses and posts them
to its action (whose TwiML runs next), `<Hangup/>` ends their leg without bridging, a
`<Dial>` there is refused (Twilio error 13201). When that TwiML ends without a hang-up the
two are bridged until the person hangs up (after `talk_ms`) or `<Dial timeLimit>` runs out.
The parent call then continues with the TwiML of the `<Dial action>`, which gets
DialCallStatus, DialCallSid and DialCallDuration.

If the caller hangs up during the dial, the dial is cancelled with the call and no action
is requested (the application learns the end from the status callback).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from caller_engine.sim.twilio import webhooks as hooks
from caller_engine.sim.twilio.rest import new_sid
from caller_engine.sim.twilio.twiml_reader import (
    Dial,
    DialNumber,
    Gather,
    Hangup,
    Pause,
    Play,
    Say,
    TwimlError,
    Unsupported,
    Verb,
    parse_twiml,
)

if TYPE_CHECKING:
    from caller_engine.sim.emulated_call import ActiveEmulatedCall
    from caller_engine.sim.twilio.webhooks import WebhookRecord

PersonOutcome = Literal["answer", "no-answer", "busy", "failed"]
# Seconds of Twilio time a <Say> takes per character (about 14 characters a second).
SAY_SECONDS_PER_CHAR = 0.07


@dataclass(frozen=True, slots=True)
class ScriptedPerson:
    """Someone at a number calls are transferred to."""

    outcome: PersonOutcome = "answer"
    press: str | None = "1"  # what they key in at a <Gather>; None: nothing
    talk_ms: int = 2000  # once bridged, how long until they hang up (Twilio time)


@dataclass
class DialLeg:
    """One dialed leg, as the network carried it (for tests and the live view)."""

    sid: str
    number: str
    caller_id: str | None
    status: str = "initiated"
    heard: list[str] = field(default_factory=list)
    pressed: str = ""
    bridged: bool = False
    duration: int = 0
    errors: list[str] = field(default_factory=list)


Request = Callable[[str, str, str, dict[str, str]], Awaitable["WebhookRecord"]]
Sleep = Callable[[float], Awaitable[None]]


class DialRunner:
    """Runs one `<Dial>` of a call. `request(kind, method, url, params)` makes a signed
    request as Twilio; `sleep` waits seconds of Twilio time."""

    def __init__(
        self,
        active: ActiveEmulatedCall,
        person_for: Callable[[str], ScriptedPerson],
        *,
        account_sid: str,
        request: Request,
        sleep: Sleep,
        ring_seconds: float,
    ) -> None:
        self.active = active
        self.person_for = person_for
        self.account_sid = account_sid
        self.request = request
        self.sleep = sleep
        self.ring_seconds = ring_seconds

    async def run(self, verb: Dial) -> tuple[DialLeg, dict[str, str]]:
        """Dial; the leg and the action parameters (DialCallStatus, ...)."""
        number = verb.numbers[0]
        if len(verb.numbers) > 1:
            self.active.warnings.append("<Dial> of several numbers: only the first is emulated")
        leg = DialLeg(new_sid("CA"), number.number, verb.caller_id)
        self.active.legs.append(leg)
        if verb.caller_id is not None and verb.caller_id != self.active.call.from_:
            leg.errors.append(f"callerId {verb.caller_id} is not the call's own number")
        try:
            status = await self._dial(verb, number, leg)
        except asyncio.CancelledError:
            leg.status = "completed" if leg.bridged else "canceled"
            raise
        leg.status = status
        params = {
            **hooks.call_params(self.active.call, self.account_sid, "in-progress"),
            "DialCallStatus": status,
            "DialCallSid": leg.sid,
        }
        if status == "completed":
            params["DialCallDuration"] = str(leg.duration)
            params["DialBridged"] = "true" if leg.bridged else "false"
        return leg, params

    async def _dial(self, verb: Dial, number: DialNumber, leg: DialLeg) -> str:
        person = self.person_for(number.number)
        leg.status = "ringing"
        await self.sleep(self.ring_seconds)
        if person.outcome == "failed":
            return "failed"
        if person.outcome == "busy":
            return "busy"
        if person.outcome == "no-answer":
            await self.sleep(float(verb.timeout))
            return "no-answer"
        leg.status = "in-progress"
        if number.url is not None and not await self._whisper(number, leg, person):
            return "completed"  # their leg hung up before the bridge
        leg.bridged = True
        talk = min(person.talk_ms / 1000, float(verb.time_limit))
        await self.sleep(talk)
        leg.duration = round(talk)
        return "completed"

    def _leg_params(self, leg: DialLeg) -> dict[str, str]:
        call = self.active.call
        return {
            "AccountSid": self.account_sid,
            "ApiVersion": hooks.API_VERSION,
            "CallSid": leg.sid,
            "ParentCallSid": call.sid,
            "CallStatus": "in-progress",
            "Direction": "outbound-dial",
            "From": leg.caller_id or call.from_,
            "To": leg.number,
            "Called": leg.number,
            "Caller": leg.caller_id or call.from_,
        }

    async def _fetch(
        self, leg: DialLeg, method: str, url: str, extra: dict[str, str]
    ) -> list[Verb] | None:
        record = await self.request("whisper", method, url, {**self._leg_params(leg), **extra})
        if not record.ok:
            leg.errors.append(f"whisper TwiML {url} failed: HTTP {record.status or record.error}")
            return None
        try:
            return parse_twiml(record.body)
        except TwimlError as exc:
            leg.errors.append(f"invalid whisper TwiML: {exc}")
            return None

    async def _whisper(self, number: DialNumber, leg: DialLeg, person: ScriptedPerson) -> bool:
        """Run the `<Number url>` TwiML; False when it hung up the person's leg."""
        assert number.url is not None
        verbs = await self._fetch(leg, number.method, number.url, {})
        if verbs is None:
            return False  # Twilio plays an application error to them and hangs up
        while verbs is not None:
            next_verbs: list[Verb] | None = None
            for verb in verbs:
                if isinstance(verb, Hangup):
                    return False
                if isinstance(verb, Dial):
                    leg.errors.append("13201: <Dial> in the TwiML of a <Number url>")
                    return False
                if isinstance(verb, Gather):
                    next_verbs = await self._gather(verb, leg, person)
                    if next_verbs is not None:
                        break
                elif isinstance(verb, Say | Play | Pause):
                    await self._prompt(verb, leg)
                elif isinstance(verb, Unsupported):
                    leg.errors.append(f"<{verb.tag}> is not emulated in a whisper")
            verbs = next_verbs
        return True

    async def _prompt(self, verb: Say | Play | Pause, leg: DialLeg) -> None:
        if isinstance(verb, Say):
            leg.heard.append(verb.text)
            await self.sleep(len(verb.text) * SAY_SECONDS_PER_CHAR)
        elif isinstance(verb, Play):
            await self.sleep(0.5)
        else:
            await self.sleep(verb.seconds)

    async def _gather(
        self, verb: Gather, leg: DialLeg, person: ScriptedPerson
    ) -> list[Verb] | None:
        """The TwiML of the Gather's action when digits were pressed; None to go on with
        the verbs after the `<Gather>` (nothing was pressed)."""
        for prompt in verb.prompts:
            await self._prompt(prompt, leg)
        if not person.press:
            await self.sleep(float(verb.timeout))
            return None
        digits = person.press[: verb.num_digits] if verb.num_digits else person.press
        leg.pressed += digits
        if verb.action is None:
            return []
        fetched = await self._fetch(leg, verb.method, verb.action, {"Digits": digits})
        return fetched if fetched is not None else [Hangup()]
