"""Scripted calls for `caller-engine simulate` and the tests: what the callee does, what the
emulated model answers, and what each scenario must produce."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from caller_engine.sim.callee import (
    BargeIn,
    Callee,
    OnStream,
    Say,
    ScriptContext,
    ScriptedCallee,
    WaitForAgent,
    unanswered,
    voicemail,
)
from caller_engine.sim.clips import CLIPS
from caller_engine.sim.openai.realtime import RealtimeScript, ScriptedResponse
from caller_engine.sim.twilio.dial import ScriptedPerson

if TYPE_CHECKING:
    from caller_engine.sim.world import World

CALLEE_NUMBER = "+15550102030"
BUSINESS = "Bright Dental"
TIMEZONE = "America/New_York"
FRONT_DESK = "+15550107000"
TRANSFER_SUMMARY = "Alex Morgan, a patient due for a check-up, would like to talk to someone."
VOICEMAIL_MESSAGE = (
    "Hi, this is Dana from Bright Dental about your check-up. Please call us back. Thank you!"
)


def line(text: str, *, tools: list[tuple[str, dict[str, Any]]] | None = None) -> ScriptedResponse:
    """An agent line spoken as a tone whose length follows the text (about 14 chars/s)."""
    ms = min(4000, max(500, len(text) * 70))
    return ScriptedResponse(text=text, audio_ms=ms, tool_calls=list(tools or []))


def tool(name: str, args: dict[str, Any]) -> ScriptedResponse:
    return ScriptedResponse(text="", tool_calls=[(name, args)])


def booking_day(today: date) -> date:
    """The first open day after today (working days Monday–Saturday)."""
    day = today + timedelta(days=1)
    while day.weekday() == 6:
        day += timedelta(days=1)
    return day


@dataclass(frozen=True, slots=True)
class Do:
    """A callee step that acts on the world (e.g. break the model connection)."""

    action: Callable[[World], Awaitable[None]]
    world: World

    async def run(self, ctx: ScriptContext) -> None:
        await self.action(self.world)


@dataclass
class Expectation:
    status: str
    tools: list[str] = field(default_factory=list)
    booked: bool = False
    sms: bool = False
    transcript_contains: list[str] = field(default_factory=list)
    interrupted: bool = False
    reconnects: int = 0
    transfer: str | None = None  # the transfer's final status, when there is one
    # The callee asked not to be called again: the number is listed, the server hangs up,
    # and a second call is refused.
    opted_out: bool = False


@dataclass
class Scenario:
    name: str
    description: str
    callee: Callable[[World], Callee]
    script: Callable[[], RealtimeScript]
    expect: Expectation
    settings: dict[str, Any] = field(default_factory=dict)
    # What the emulated summary model answers (it must fit the summary schema).
    summary: dict[str, Any] | None = None
    # More of the initiate body's `agent` (e.g. transferTargets).
    agent: dict[str, Any] = field(default_factory=dict)
    # Who answers a <Dial> to each number.
    people: dict[str, ScriptedPerson] = field(default_factory=dict)


def _booking_script(day: date, today: date) -> Callable[[], RealtimeScript]:
    when = "tomorrow" if day == today + timedelta(days=1) else f"on {day:%A}"
    iso = day.isoformat()

    def make() -> RealtimeScript:
        return RealtimeScript(
            responses=[
                line(
                    f"Hi, this is Dana from {BUSINESS}. Is now a good time to book your check-up?"
                ),
                tool("check_availability", {"date": iso}),
                line(f"I have ten, ten thirty and eleven {when}. Which suits you?"),
                line("Ten it is. May I have your full name?"),
                tool("schedule_meeting", {"date": iso, "time": "10:00", "name": "Alex Morgan"}),
                line(f"You're booked for ten a.m. {when}. Shall I text you a confirmation?"),
                tool(
                    "send_sms",
                    {
                        "to": CALLEE_NUMBER,
                        "message": f"{BUSINESS}: your check-up is booked for {iso} at 10:00.",
                    },
                ),
                line("Done, the text is on its way. Anything else I can help with?"),
                line("Thanks Alex, see you then. Goodbye!", tools=[("end_call", {})]),
            ],
            user_transcripts=[
                CLIPS["book_tomorrow"],
                CLIPS["ten_am"],
                CLIPS["name_alex"],
                CLIPS["text_confirmation"],
                CLIPS["goodbye"],
            ],
        )

    return make


def _conversation(*clips: str) -> list[Any]:
    steps: list[Any] = []
    for clip in clips:
        steps += [WaitForAgent(), Say(clip)]
    return steps


def _booking(day: date, today: date) -> Scenario:
    iso = day.isoformat()
    return Scenario(
        name="booking",
        description="greeting → availability → booking → SMS confirmation → goodbye and end_call",
        callee=lambda world: ScriptedCallee(
            _conversation("book_tomorrow", "ten_am", "name_alex", "text_confirmation", "goodbye")
        ),
        script=_booking_script(day, today),
        expect=Expectation(
            status="completed",
            tools=["check_availability", "schedule_meeting", "send_sms", "end_call"],
            booked=True,
            sms=True,
            transcript_contains=[CLIPS["book_tomorrow"], "May I have your full name?"],
        ),
        summary={
            "intent": "book a dental check-up",
            "outcome": f"check-up booked for {iso} at 10:00; SMS confirmation sent",
            "nextAction": "send a reminder the day before the appointment",
            "scheduledDate": f"{iso}T10:00:00",
            "sentiment": "positive",
        },
    )


def _interrupt() -> Scenario:
    def make() -> RealtimeScript:
        return RealtimeScript(
            responses=[
                ScriptedResponse(
                    text=(
                        f"Hi, this is Dana from {BUSINESS}. I'm calling about your check-up: "
                        "we have openings this week on Monday, Wednesday and Friday mornings, "
                        "and on Saturday until noon."
                    ),
                    audio_ms=7000,
                ),
                line("Of course, go ahead."),
                line("No problem, have a good day. Goodbye!", tools=[("end_call", {})]),
            ],
            user_transcripts=[CLIPS["wait_question"], CLIPS["goodbye"]],
        )

    return Scenario(
        name="interrupt",
        description="the callee talks over the agent's long greeting",
        callee=lambda world: ScriptedCallee(
            [BargeIn(1500, "wait_question"), WaitForAgent(), Say("goodbye")]
        ),
        script=make,
        expect=Expectation(
            status="completed",
            tools=["end_call"],
            interrupted=True,
            transcript_contains=["Of course, go ahead."],
        ),
    )


def _voicemail() -> Scenario:
    def make() -> RealtimeScript:
        return RealtimeScript(
            responses=[
                line(f"Hi, this is Dana from {BUSINESS}. Is this Alex?"),
                line(VOICEMAIL_MESSAGE),
            ],
        )

    return Scenario(
        name="voicemail",
        description="an answering machine picks up; the agent leaves a message and hangs up",
        callee=lambda world: voicemail(),
        script=make,
        expect=Expectation(status="voicemail"),
        settings={"voicemail_action": "message", "voicemail_message": VOICEMAIL_MESSAGE},
        summary={
            "intent": "reach the patient about a check-up",
            "outcome": "answering machine; a call-back message was left",
            "nextAction": "wait for a call back, retry tomorrow",
            "scheduledDate": None,
            "sentiment": "neutral",
        },
    )


def _unanswered(name: str, outcome: Any, description: str) -> Scenario:
    return Scenario(
        name=name,
        description=description,
        callee=lambda world: unanswered(outcome),
        script=RealtimeScript,
        expect=Expectation(status=name),
    )


async def _drop_model(world: World) -> None:
    await world.drop_model()


def _model_drop() -> Scenario:
    shared: dict[str, RealtimeScript] = {}

    def make() -> RealtimeScript:
        # One script across connections: the conversation continues after the reconnect.
        if "script" not in shared:
            shared["script"] = RealtimeScript(
                responses=[
                    line(f"Hi, this is Dana from {BUSINESS}. Can I help you book a check-up?"),
                    line("Sorry, I missed that. Which day would you like?"),
                    line("Noted. Thanks for calling, goodbye!", tools=[("end_call", {})]),
                ],
                user_transcripts=[CLIPS["book_tomorrow"], CLIPS["goodbye"]],
            )
        return shared["script"]

    return Scenario(
        name="model-drop",
        description="the model socket dies mid-call; the bridge reconnects and carries on",
        callee=lambda world: ScriptedCallee(
            [
                WaitForAgent(),
                Do(_drop_model, world),
                Say("book_tomorrow"),
                WaitForAgent(),
                Say("goodbye"),
            ]
        ),
        script=make,
        expect=Expectation(status="completed", tools=["end_call"], reconnects=1),
        summary={
            "intent": "book a check-up",
            "outcome": "the callee ended the call before choosing a day",
            "nextAction": "call back to finish the booking",
            "scheduledDate": None,
            "sentiment": "neutral",
        },
    )


def _transfer_line() -> ScriptedResponse:
    args = {"target": "frontdesk", "reason": "asked for a person", "summary": TRANSFER_SUMMARY}
    return line(
        "Of course. I'm connecting you with our front desk now, one moment.",
        tools=[("transfer_call", args)],
    )


def _transfer() -> Scenario:
    def make() -> RealtimeScript:
        return RealtimeScript(
            responses=[
                line(f"Hi, this is Dana from {BUSINESS}. Is now a good time to book a check-up?"),
                _transfer_line(),
            ],
            user_transcripts=[CLIPS["talk_to_someone"]],
        )

    return Scenario(
        name="transfer",
        description="the callee asks for a person; the front desk hears the whisper, presses 1 "
        "and takes the call",
        callee=lambda world: ScriptedCallee([WaitForAgent(), Say("talk_to_someone")]),
        script=make,
        expect=Expectation(status="completed", tools=["transfer_call"], transfer="connected"),
        settings={"transfer_targets": f"frontdesk={FRONT_DESK}"},
        people={FRONT_DESK: ScriptedPerson(press="1", talk_ms=4000)},
        summary={
            "intent": "talk to a person",
            "outcome": "transferred to the front desk, who took the call",
            "nextAction": "none; the front desk handled the caller",
            "scheduledDate": None,
            "sentiment": "neutral",
        },
    )


def _transfer_declined(day: date) -> Scenario:
    iso = day.isoformat()
    shared: dict[str, RealtimeScript] = {}

    def make() -> RealtimeScript:
        # One script across both streams of the call: the conversation goes on.
        if "script" not in shared:
            shared["script"] = RealtimeScript(
                responses=[
                    line(f"Hi, this is Dana from {BUSINESS}. Is now a good time for a check-up?"),
                    _transfer_line(),
                    line("Sorry, nobody at the front desk is free right now. Shall we call you?"),
                    tool(
                        "schedule_meeting",
                        {"date": iso, "time": "10:00", "name": "Alex Morgan (call-back)"},
                    ),
                    line(
                        "Done: the front desk will call you at ten. Goodbye!",
                        tools=[("end_call", {})],
                    ),
                ],
                user_transcripts=[CLIPS["talk_to_someone"], CLIPS["callback_yes"]],
            )
        return shared["script"]

    return Scenario(
        name="transfer-declined",
        description="the front desk answers but presses nothing; the caller is back with the "
        "agent, who books a call-back",
        callee=lambda world: ScriptedCallee(
            [
                WaitForAgent(),
                Say("talk_to_someone"),
                OnStream(2),
                WaitForAgent(),
                Say("callback_yes"),
            ]
        ),
        script=make,
        expect=Expectation(
            status="completed",
            tools=["transfer_call", "schedule_meeting", "end_call"],
            booked=True,
            transfer="declined",
            transcript_contains=["nobody at the front desk is free"],
        ),
        settings={"transfer_targets": f"frontdesk={FRONT_DESK}"},
        people={FRONT_DESK: ScriptedPerson(press=None)},
        summary={
            "intent": "talk to a person",
            "outcome": "nobody was free; a call-back was booked",
            "nextAction": f"the front desk calls back on {iso} at 10:00",
            "scheduledDate": f"{iso}T10:00:00",
            "sentiment": "neutral",
        },
    )


def _opt_out() -> Scenario:
    def make() -> RealtimeScript:
        return RealtimeScript(
            responses=[
                line(
                    f"Hi, this is Dana from {BUSINESS}. Is now a good time to book your check-up?"
                ),
                tool("opt_out", {"reason": "asked not to be called again"}),
                line("Understood, we won't call you again. Sorry for the trouble. Goodbye!"),
            ],
            user_transcripts=[CLIPS["stop_calling"]],
        )

    return Scenario(
        name="opt-out",
        description=(
            "the callee asks not to be called again: opt_out lists the number, the agent "
            "confirms, the call ends, and the next call to the number is refused"
        ),
        callee=lambda world: ScriptedCallee([WaitForAgent(), Say("stop_calling")]),
        script=make,
        expect=Expectation(
            status="completed",
            tools=["opt_out"],
            transcript_contains=[CLIPS["stop_calling"], "we won't call you again"],
            opted_out=True,
        ),
        summary={
            "intent": "offer a check-up booking",
            "outcome": "the person asked not to be called again; the number was opted out",
            "nextAction": "none: do not call this number",
            "scheduledDate": None,
            "sentiment": "negative",
        },
    )


def scenarios(today: date | None = None) -> dict[str, Scenario]:
    today = today or datetime.now(ZoneInfo(TIMEZONE)).date()
    items = [
        _booking(booking_day(today), today),
        _interrupt(),
        _voicemail(),
        _unanswered("no-answer", "no-answer", "the phone rings out"),
        _unanswered("busy", "busy", "the line is busy"),
        _model_drop(),
        _transfer(),
        _transfer_declined(booking_day(today)),
        _opt_out(),
    ]
    return {s.name: s for s in items}
