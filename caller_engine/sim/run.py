"""`caller-engine simulate`: one full call on loopback, shown live, checked at the end."""

from __future__ import annotations

import asyncio
import secrets
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson

from caller_engine.calls.models import CallRecord, DncEntry
from caller_engine.calls.result import CallResult
from caller_engine.sim.live import LiveView
from caller_engine.sim.scenarios import CALLEE_NUMBER, Scenario, scenarios
from caller_engine.sim.world import World, start_world
from caller_engine.web.state import SERVICES


@dataclass
class SimOutcome:
    call_sid: str
    result: CallResult
    record: CallRecord | None
    problems: list[str] = field(default_factory=list)
    delivered: bool = False
    listed: DncEntry | None = None  # the callee's do-not-call entry after the call
    ended_by: str | None = None  # who ended the call on the emulated network
    second_call: tuple[int, str] | None = None  # HTTP status and code of a call placed after


def check(world: World, scenario: Scenario, outcome: SimOutcome) -> list[str]:
    """What the scenario promised and did not happen (empty when all is well)."""
    expect, result = scenario.expect, outcome.result
    problems: list[str] = []
    if result.status != expect.status:
        problems.append(f"status {result.status!r}, expected {expect.status!r}")
    tools = [t.name for t in result.toolCalls]
    if tools != expect.tools:
        problems.append(f"tool calls {tools}, expected {expect.tools}")
    failed = [t.name for t in result.toolCalls if not t.ok]
    if failed:
        problems.append(f"tools failed: {failed}")
    events = [e for e in world.calendar.events.values() if e.status != "cancelled"]
    if expect.booked != bool(events):
        problems.append(f"{len(events)} calendar event(s), expected {1 if expect.booked else 0}")
    sms = [m for m in world.rest.messages if m.to == CALLEE_NUMBER]
    if expect.sms != bool(sms):
        problems.append(f"{len(sms)} SMS, expected {1 if expect.sms else 0}")
    for text in expect.transcript_contains:
        if text not in result.fullText:
            problems.append(f"transcript lacks {text!r}")
    if expect.interrupted and not any(e.interrupted for e in result.transcript):
        problems.append("no interruption in the transcript")
    reconnects = int(result.metrics.get("modelReconnects", 0))
    if reconnects != expect.reconnects:
        problems.append(f"{reconnects} model reconnect(s), expected {expect.reconnects}")
    transfer = result.transfer.status if result.transfer else None
    if transfer != expect.transfer:
        problems.append(f"transfer {transfer!r}, expected {expect.transfer!r}")
    if world.model.violations:
        problems.append(f"model protocol violations: {world.model.violations[:3]}")
    problems += _opt_out_problems(expect.opted_out, outcome)
    if not outcome.delivered:
        problems.append("the result did not reach the orchestrator")
    return problems


def _opt_out_problems(expected: bool, outcome: SimOutcome) -> list[str]:
    if outcome.result.optedOut != expected:
        return [f"optedOut {outcome.result.optedOut}, expected {expected}"]
    if not expected:
        return [] if outcome.listed is None else ["the callee was put on the do-not-call list"]
    problems: list[str] = []
    listed = outcome.listed
    if (
        listed is None
        or listed.source != "opt_out"
        or listed.callback_id != outcome.result.callbackId
    ):
        problems.append(f"do-not-call entry {listed}, expected one from this call's opt_out")
    if outcome.ended_by != "server":
        problems.append(f"the call was ended by {outcome.ended_by}, expected the server")
    if outcome.second_call != (403, "do_not_call"):
        problems.append(f"a second call was answered {outcome.second_call}, expected 403")
    return problems


async def run_call(world: World, out: TextIO | None, *, limit: float = 120.0) -> SimOutcome:
    scenario = world.scenario
    callback_id = f"sim-{scenario.name}-{secrets.token_hex(3)}"
    view = LiveView(world, out) if out is not None else None
    done = asyncio.Event()
    call_sid = await world.place_call(callback_id)
    if view is not None:
        view.say(f"calling {CALLEE_NUMBER} (callbackId {callback_id}, callSid {call_sid})")
    follower = asyncio.create_task(view.follow(call_sid, done)) if view else None
    try:
        result = await world.wait_result(callback_id, limit)
        await world.phone.wait_finished(call_sid, limit)
        try:
            await world.orchestrator.wait_for(callback_id, 10.0)
            delivered = True
        except TimeoutError:
            delivered = False
    finally:
        done.set()
        if follower is not None:
            await follower
    store = world.app[SERVICES].store
    record = await store.get(callback_id)
    outcome = SimOutcome(call_sid, result, record, delivered=delivered)
    outcome.listed = await store.dnc_get(CALLEE_NUMBER)
    emulated = world.call(call_sid)
    outcome.ended_by = emulated.ended_by if emulated is not None else None
    if scenario.expect.opted_out:
        status, body = await world.initiate(callback_id + "-again")
        outcome.second_call = (status, str(body.get("error", {}).get("code", "")))
        if view is not None:
            view.say(f"a second call to {CALLEE_NUMBER}: {status} {outcome.second_call[1]}")
    outcome.problems = check(world, scenario, outcome)
    return outcome


def _section(out: TextIO, title: str) -> None:
    out.write(f"\n{title}\n{'-' * len(title)}\n")


def report(world: World, outcome: SimOutcome, out: TextIO) -> None:
    result = outcome.result
    _section(out, "Transcript")
    out.write((result.fullText or "(nothing was said)") + "\n")
    for tool in result.toolCalls:
        state = "ok" if tool.ok else "error"
        out.write(f"  tool {tool.name}: {state} in {tool.durationMs:.0f} ms\n")
    _section(out, "Summary")
    if result.summary is not None:
        for key, value in result.summary.model_dump().items():
            out.write(f"  {key}: {value}\n")
    else:
        out.write(f"  (none: {result.summaryError})\n")
    _section(out, "Calendar (Google emulator)")
    events = list(world.calendar.events.values())
    for event in events:
        out.write(
            f"  {event.summary}: {event.body.get('start', {}).get('dateTime')} "
            f"({event.body.get('start', {}).get('timeZone')}) id {event.id}\n"
        )
    if not events:
        out.write("  (no events)\n")
    _section(out, "SMS (Twilio emulator)")
    for message in world.rest.messages:
        out.write(f"  to {message.to}: {message.body!r} ({message.sid})\n")
    if not world.rest.messages:
        out.write("  (none)\n")
    _section(out, "Call")
    history = outcome.record.status_history if outcome.record else []
    out.write("  status: " + " → ".join(e.status for e in history) + "\n")
    out.write(f"  result: {result.status}")
    out.write(f", answered by {result.answeredBy}" if result.answeredBy else "")
    out.write(f", {result.duration:.1f} s of stream\n" if result.duration else "\n")
    if result.transfer is not None:
        t = result.transfer
        out.write(f"  transfer to {t.target}: {t.status}")
        out.write(
            f", {result.humanDuration:.1f} s with a person\n" if result.humanDuration else "\n"
        )
    out.write(f"  delivered to the orchestrator: {'yes' if outcome.delivered else 'no'}\n")
    if result.optedOut or outcome.listed is not None:
        out.write(f"  opted out: {'yes' if result.optedOut else 'no'}")
        if outcome.listed is not None:
            out.write(f"; on the do-not-call list ({outcome.listed.source})")
        if outcome.second_call is not None:
            status, code = outcome.second_call
            out.write(f"; the next call was refused: {status} {code}")
        out.write("\n")
    _section(out, "Latency (this call)")
    for key, value in result.metrics.items():
        out.write(f"  {key}: {value:g}\n")
    out.write("\n")
    if outcome.problems:
        out.write("NOT AS EXPECTED:\n" + "".join(f"  - {p}\n" for p in outcome.problems))
    else:
        out.write(f"Scenario '{world.scenario.name}' ran as expected.\n")


async def simulate(
    name: str,
    *,
    speed: float = 1.0,
    as_json: bool = False,
    realtime_url: str | None = None,
    openai_key: str | None = None,
    out: TextIO = sys.stdout,
) -> int:
    scenario = scenarios()[name]
    world = await start_world(
        scenario, speed=speed, realtime_url=realtime_url, openai_key=openai_key
    )
    try:
        if not as_json:
            out.write(f"Scenario {scenario.name}: {scenario.description}\n\n")
        outcome = await run_call(world, None if as_json else out)
    finally:
        await world.stop()
    if as_json:
        payload: dict[str, Any] = outcome.result.model_dump(mode="json")
        out.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        report(world, outcome, out)
    real_model = realtime_url is not None
    return 0 if real_model or not outcome.problems else 1
