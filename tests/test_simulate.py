"""Every `caller-engine simulate` scenario, end to end on loopback, checked for its outcome."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from caller_engine.cli import main
from caller_engine.sim.run import SimOutcome, report, run_call
from caller_engine.sim.scenarios import CALLEE_NUMBER, VOICEMAIL_MESSAGE, scenarios
from caller_engine.sim.world import World, start_world

SPEED = 8.0


@asynccontextmanager
async def simulated(name: str) -> AsyncIterator[tuple[World, SimOutcome]]:
    world = await start_world(scenarios()[name], speed=SPEED)
    try:
        outcome = await run_call(world, io.StringIO(), limit=60)
        yield world, outcome
    finally:
        await world.stop()


def statuses(outcome: SimOutcome) -> list[str]:
    assert outcome.record is not None
    return [e.status for e in outcome.record.status_history]


async def test_booking() -> None:
    async with simulated("booking") as (world, outcome):
        assert outcome.problems == []
        [event] = world.calendar.events.values()
        assert event.summary == "Appointment - Alex Morgan"
        assert event.body["start"]["dateTime"].endswith("T10:00:00-05:00") or event.body["start"][
            "dateTime"
        ].endswith("T10:00:00-04:00")
        [sms] = world.rest.messages
        assert sms.to == CALLEE_NUMBER and "booked" in sms.body
        lines = outcome.result.fullText.splitlines()
        assert lines[0].startswith("[Agent]: Hi, this is Dana")
        assert lines[1] == "[User]: Hi, I'd like to book an appointment for tomorrow."
        assert lines[-1] == "[Agent]: Thanks Alex, see you then. Goodbye!"
        assert statuses(outcome) == ["initiated", "ringing", "in-progress", "completed"]
        assert outcome.result.summary is not None
        assert outcome.result.summary.intent == "book a dental check-up"
        delivered = world.orchestrator.results[outcome.result.callbackId]
        assert delivered["status"] == "completed"
        out = io.StringIO()
        report(world, outcome, out)
        assert "ran as expected" in out.getvalue()


async def test_interrupt() -> None:
    async with simulated("interrupt") as (world, outcome):
        assert outcome.problems == []
        call = world.call(outcome.call_sid)
        assert call is not None and call.media is not None
        assert len(call.media.clears) == 1
        first = outcome.result.transcript[0]
        assert first.role == "agent" and first.interrupted
        assert outcome.result.metrics["interruptions"] == 1


async def test_voicemail() -> None:
    async with simulated("voicemail") as (world, outcome):
        assert outcome.problems == []
        assert outcome.result.answeredBy == "machine_start"
        creates = [e for e in world.model.sessions[0].received if e["type"] == "response.create"]
        assert any(VOICEMAIL_MESSAGE in str(e.get("response")) for e in creates)
        assert statuses(outcome)[-1] == "completed"


@pytest.mark.parametrize("name", ["no-answer", "busy"])
async def test_unanswered(name: str) -> None:
    async with simulated(name) as (world, outcome):
        assert outcome.problems == []
        assert statuses(outcome)[-1] == name
        assert outcome.result.status == name
        assert world.model.connection_attempts == 0  # no TwiML, no model session


async def test_model_drop() -> None:
    async with simulated("model-drop") as (world, outcome):
        assert outcome.problems == []
        assert len(world.model.sessions) == 2
        replayed = [
            e for e in world.model.sessions[1].received if e["type"] == "conversation.item.create"
        ]
        assert replayed and replayed[0]["item"]["role"] == "assistant"
        assert outcome.result.error is None


def test_cli_lists_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--list"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == list(scenarios())


def test_cli_rejects_unknown_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "nope"]) == 2
    assert "unknown scenario" in capsys.readouterr().err


async def test_opt_out() -> None:
    async with simulated("opt-out") as (world, outcome):
        assert outcome.problems == []
        callback_id = outcome.result.callbackId
        # The default prompt tells the agent, and the tool is offered.
        received = world.model.sessions[0].received
        update = next(e for e in received if e["type"] == "session.update")
        session = update["session"]
        assert "opt_out" in session["instructions"]
        assert "opt_out" in [t["name"] for t in session["tools"]]
        [call] = outcome.result.toolCalls
        assert call.name == "opt_out" and call.output["status"] == "listed"
        # Listed at once, from this call; the goodbye played in full, then the server hung up.
        assert outcome.listed is not None
        assert (outcome.listed.source, outcome.listed.callback_id) == ("opt_out", callback_id)
        assert outcome.result.transcript[-1].role == "agent"
        assert not outcome.result.transcript[-1].interrupted
        assert outcome.ended_by == "server"
        assert world.orchestrator.results[callback_id]["optedOut"] is True
        # Every later call to the number is refused before dialing.
        assert outcome.second_call == (403, "do_not_call")
        assert len(world.rest.calls) == 1
        resp = await world.http.get(
            f"{world.base_url}/dnc/{CALLEE_NUMBER}", headers={"X-API-Key": world.api_key}
        )
        assert (await resp.json())["source"] == "opt_out"
