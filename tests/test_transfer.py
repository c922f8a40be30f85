"""Hand-off to a person end to end: the real server, the emulated phone network (call update,
`<Dial>`, whisper, `<Gather>`, dial action, a second stream) and the emulated model."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from caller_engine.calls.models import AgentOverrides
from caller_engine.sim.callee import Say, ScriptedCallee, WaitForAgent
from caller_engine.sim.clips import CLIPS
from caller_engine.sim.openai.realtime import RealtimeScript
from caller_engine.sim.run import SimOutcome, run_call
from caller_engine.sim.scenarios import (
    BUSINESS,
    FRONT_DESK,
    TRANSFER_SUMMARY,
    Expectation,
    Scenario,
    line,
    scenarios,
)
from caller_engine.sim.twilio.dial import ScriptedPerson
from caller_engine.sim.world import World, start_world
from caller_engine.telephony.signature import sign_twilio_request
from caller_engine.web.state import SERVICES

SPEED = 8.0
BILLING = "+15550107001"


@asynccontextmanager
async def simulated(
    scenario: Scenario, **overrides: Any
) -> AsyncIterator[tuple[World, SimOutcome]]:
    world = await start_world(scenario, speed=SPEED, overrides=overrides)
    try:
        outcome = await run_call(world, io.StringIO(), limit=60)
        yield world, outcome
    finally:
        await world.stop()


def redirects(world: World, call_sid: str) -> list[dict[str, str]]:
    path = f"/Calls/{call_sid}.json"
    return [
        dict(r.form) for r in world.rest.requests if r.path.endswith(path) and "Twiml" in r.form
    ]


def tool_names(world: World, session: int = 0) -> list[str]:
    update = next(
        e for e in world.model.sessions[session].received if e["type"] == "session.update"
    )
    return [t["name"] for t in update["session"].get("tools", [])]


def transfer_schema(world: World) -> dict[str, Any]:
    update = next(e for e in world.model.sessions[0].received if e["type"] == "session.update")
    [tool] = [t for t in update["session"]["tools"] if t["name"] == "transfer_call"]
    return dict(tool["parameters"])


def refusing(name: str, target: str, **scenario: Any) -> Scenario:
    """The caller asks for a person; the model names `target`; the tool refuses; goodbye."""

    def make() -> RealtimeScript:
        args = {"target": target, "reason": "asked", "summary": TRANSFER_SUMMARY}
        return RealtimeScript(
            responses=[
                line(f"Hi, this is Dana from {BUSINESS}."),
                line("Let me connect you.", tools=[("transfer_call", args)]),
                line("Sorry, I cannot transfer you there. Goodbye!", tools=[("end_call", {})]),
            ],
            user_transcripts=[CLIPS["talk_to_someone"]],
        )

    return Scenario(
        name=name,
        description="a transfer the tool refuses",
        callee=lambda world: ScriptedCallee([WaitForAgent(), Say("talk_to_someone")]),
        script=make,
        expect=Expectation(status="completed", tools=["transfer_call", "end_call"]),
        **scenario,
    )


async def test_transfer_connects_and_the_record_follows_the_call() -> None:
    # A 40 s CALL_TIME_LIMIT (the agent's part takes about 20 s of the emulated clock) and
    # a person who talks for 50 s: the human part must not be cut at the limit (the update
    # raises the call's TimeLimit).
    scenario = dataclasses.replace(
        scenarios()["transfer"], people={FRONT_DESK: ScriptedPerson(press="1", talk_ms=50_000)}
    )
    async with simulated(scenario, call_time_limit=40) as (world, outcome):
        assert outcome.problems == []
        result = outcome.result
        call = world.call(outcome.call_sid)
        assert call is not None
        # The live call was redirected by a REST update to a <Dial> of the front desk.
        [update] = redirects(world, outcome.call_sid)
        dial = ET.fromstring(update["Twiml"]).find("Dial")
        assert dial is not None
        assert dial.get("callerId") == world.settings.twilio_phone_number
        assert dial.get("answerOnBridge") == "true"
        assert dial.get("timeout") == str(world.settings.transfer_ring_timeout)
        number = dial.find("Number")
        assert number is not None and number.text == FRONT_DESK
        assert "callbackId=" in (number.get("url") or "") and "token=" in (number.get("url") or "")
        # The person heard the whisper, pressed 1 and talked with the caller.
        [leg] = call.legs
        assert leg.heard == [
            f"Call from Caller Engine for {BUSINESS}: {TRANSFER_SUMMARY.rstrip('.')}. "
            "Press 1 to accept."
        ]
        assert leg.pressed == "1" and leg.bridged and leg.errors == []
        assert leg.duration == 50  # the whole conversation, beyond CALL_TIME_LIMIT
        assert call.ended_by != "time-limit"
        assert int(update["TimeLimit"]) > 40 + world.settings.transfer_time_limit
        assert len(call.streams) == 1
        dial_actions = [w for w in call.webhooks if "DialCallStatus" in w.params]
        assert [w.params["DialCallStatus"] for w in dial_actions] == ["completed"]
        assert "<Hangup" in dial_actions[0].body
        # The result and the record.
        transfer = result.transfer
        assert transfer is not None
        assert (transfer.target, transfer.number, transfer.status) == (
            "frontdesk",
            FRONT_DESK,
            "connected",
        )
        assert transfer.summary == TRANSFER_SUMMARY and transfer.reason == "asked for a person"
        assert transfer.requestedAt < (transfer.connectedAt or "") < (transfer.endedAt or "")
        assert result.humanDuration is not None and result.humanDuration >= 50 / SPEED * 0.9
        assert result.duration is not None and result.duration < result.humanDuration
        assert result.endedAt is not None and result.endedAt >= transfer.endedAt
        roles = [(e.role, e.text) for e in result.transcript if e.role == "system"]
        assert roles == [
            ("system", "Transfer to frontdesk requested"),
            ("system", "Transfer to frontdesk: connected"),
        ]
        assert "[Call]: Transfer to frontdesk: connected" in result.fullText
        assert outcome.record is not None and outcome.record.transfer == transfer
        delivered = world.orchestrator.results[result.callbackId]
        assert delivered["transfer"]["status"] == "connected"
        resp = await world.http.get(
            f"{world.base_url}/calls/{result.callbackId}", headers={"X-API-Key": world.api_key}
        )
        view = await resp.json()
        assert view["transfer"] == transfer.model_dump(mode="json")
        assert view["result"]["humanDuration"] == result.humanDuration
        # The summary model was told about the transfer.
        asked = str(world.chat.requests[-1])
        assert "transfer to a person (frontdesk): connected" in asked
        metrics = world.app[SERVICES].metrics.render().decode()
        assert 'caller_engine_transfers_total{outcome="connected"} 1.0' in metrics
        assert "caller_engine_transfer_human_seconds_count 1.0" in metrics


async def test_transfer_declined_comes_back_to_the_agent() -> None:
    async with simulated(scenarios()["transfer-declined"]) as (world, outcome):
        assert outcome.problems == []
        result = outcome.result
        call = world.call(outcome.call_sid)
        assert call is not None
        [leg] = call.legs
        assert leg.pressed == "" and not leg.bridged
        # A second media stream of the same call, on a new (pre-warmed) model session that
        # got the conversation so far and the cue to offer a call-back.
        assert len(call.streams) == 2
        assert len(world.model.sessions) == 2
        second = world.model.sessions[1].received
        replayed = [e["item"] for e in second if e["type"] == "conversation.item.create"]
        texts = str(replayed)
        assert "connecting you with our front desk" in texts
        assert any(i.get("type") == "function_call_output" for i in replayed)
        [create, *_] = [e for e in second if e["type"] == "response.create"]
        assert "offer to book a call-back" in create["response"]["instructions"]
        assert "the person could not take the call" in create["response"]["instructions"]
        assert "transfer_call" in tool_names(world, 1)
        transfer = result.transfer
        assert transfer is not None and transfer.status == "declined"
        assert transfer.connectedAt is None and transfer.endedAt is not None
        assert result.humanDuration is None
        entries = [e.text for e in result.transcript if e.role == "system"]
        assert entries == [
            "Transfer to frontdesk requested",
            "Transfer to frontdesk: not connected (declined)",
        ]
        times = [e.at for e in result.transcript if e.role in ("agent", "user", "system")]
        assert times == sorted(times)  # one timeline across both streams
        assert [
            w.params["DialCallStatus"] for w in call.webhooks if "DialCallStatus" in w.params
        ] == ["completed"]
        metrics = world.app[SERVICES].metrics.render().decode()
        assert 'caller_engine_transfers_total{outcome="declined"} 1.0' in metrics


async def test_unknown_target_is_refused() -> None:
    scenario = refusing(
        "transfer-unknown", "+19005550100", settings={"transfer_targets": f"frontdesk={FRONT_DESK}"}
    )
    async with simulated(scenario) as (world, outcome):
        assert outcome.problems == ["tools failed: ['transfer_call']"]
        assert transfer_schema(world)["properties"]["target"]["enum"] == ["frontdesk"]
        [attempt, _] = outcome.result.toolCalls
        assert not attempt.ok
        assert "not someone this call can be transferred to" in attempt.output["error"]
        assert redirects(world, outcome.call_sid) == []
        call = world.call(outcome.call_sid)
        assert call is not None and call.legs == []
        assert outcome.result.transfer is None


async def test_target_outside_the_per_call_list_is_refused() -> None:
    scenario = refusing(
        "transfer-not-allowed",
        "billing",
        settings={"transfer_targets": f"frontdesk={FRONT_DESK},billing={BILLING}"},
        agent={"transferTargets": [{"name": "frontdesk"}]},
    )
    async with simulated(scenario) as (world, outcome):
        assert outcome.problems == ["tools failed: ['transfer_call']"]
        assert transfer_schema(world)["properties"]["target"]["enum"] == ["frontdesk"]
        [attempt, _] = outcome.result.toolCalls
        assert not attempt.ok and "The choices are: frontdesk." in attempt.output["error"]
        assert redirects(world, outcome.call_sid) == []
        call = world.call(outcome.call_sid)
        assert call is not None and call.legs == []


async def test_caller_hangs_up_while_it_rings() -> None:
    scenario = dataclasses.replace(
        scenarios()["transfer"],
        name="transfer-hangup",
        people={FRONT_DESK: ScriptedPerson(outcome="no-answer")},
        expect=Expectation(status="completed", tools=["transfer_call"], transfer="canceled"),
    )
    world = await start_world(scenario, speed=SPEED, overrides={"transfer_ring_timeout": 60})
    try:

        async def hang_up_while_ringing() -> None:
            active = await world.phone.next_call(10)
            await asyncio.wait_for(active.dialing.wait(), 20)
            await asyncio.sleep(0.2)
            await active.hang_up()

        hanger = asyncio.create_task(hang_up_while_ringing())
        outcome = await run_call(world, io.StringIO(), limit=60)
        await hanger
        assert outcome.problems == []
        call = world.call(outcome.call_sid)
        assert call is not None
        [leg] = call.legs
        assert leg.status == "canceled"
        assert not [w for w in call.webhooks if "DialCallStatus" in w.params]
        transfer = outcome.result.transfer
        assert transfer is not None and transfer.status == "canceled"
        assert outcome.record is not None and outcome.record.transfer is not None
        assert outcome.record.transfer.status == "canceled"
        assert len(world.app[SERVICES].bridge.handoffs) == 0
    finally:
        await world.stop()


async def test_per_call_targets_validated_at_initiate() -> None:
    scenario = scenarios()["transfer"]
    world = await start_world(scenario, speed=SPEED)
    try:
        headers = {"X-API-Key": world.api_key}
        for targets, message in (
            ([{"name": "legal"}], "'legal' is not a configured transfer target"),
            ([{"name": "x", "number": "12345"}], "String should match pattern"),
            (
                [{"name": "a", "number": BILLING}, {"name": "a", "number": BILLING}],
                "'a' is listed twice",
            ),
        ):
            resp = await world.http.post(
                world.base_url + "/call/initiate",
                json={
                    "callbackId": "cb-bad",
                    "to": "+15550102030",
                    "agent": {"transferTargets": targets},
                },
                headers=headers,
            )
            body = await resp.json()
            assert resp.status == 422, body
            assert message in str(body["error"]["fields"])
        assert world.rest.calls == {}
        # The tool is offered only when the call has targets (and is not left out of
        # `agent.tools`).
        bridge = world.app[SERVICES].bridge

        def offered(**agent: Any) -> bool:
            tools = bridge.tools_for(AgentOverrides.model_validate(agent))
            return "transfer_call" in [t.name for t in tools]

        assert offered()
        assert offered(tools=["end_call", "transfer_call"])
        assert not offered(tools=["end_call"])
        assert not offered(transferTargets=[])
        assert not offered(transferTargets=[{"name": "gone"}])  # no longer configured
    finally:
        await world.stop()


@pytest.mark.parametrize("step", ["whisper", "screen", "done"])
async def test_transfer_endpoints_check_signature_token_and_call(step: str) -> None:
    world = await start_world(scenarios()["transfer"], speed=SPEED)
    try:
        call_sid = await world.place_call("cb-t")
        auth = world.settings.twilio_auth_token
        handoffs = world.app[SERVICES].bridge.handoffs
        good = handoffs.screen_url(call_sid, "cb-t").replace("/screen?", f"/{step}?")
        key = "CallSid" if step == "done" else "ParentCallSid"
        params = {key: call_sid, "CallSid": call_sid if step == "done" else "CAchild"}

        async def post(url: str, data: dict[str, str], *, sign: bool = True) -> int:
            headers = {"X-Twilio-Signature": sign_twilio_request(auth, url, data)} if sign else {}
            resp = await world.http.post(
                url.replace(world.settings.base_url, world.base_url), data=data, headers=headers
            )
            await resp.read()
            return resp.status

        assert await post(good, params, sign=False) == 403
        bad_token = good.replace("token=", "token=0")
        assert await post(bad_token, params) == 403
        other_call = {**params, key: "CA" + "0" * 32}
        assert await post(good, other_call) == 403
        assert await post(good.replace("cb-t", "cb-other"), params) == 403
        assert await post(good, params) == 200
    finally:
        await world.stop()


@pytest.mark.parametrize("person", ["busy", "no-answer"])
async def test_unanswered_transfer_comes_back_to_the_agent(person: Any) -> None:
    base = scenarios()["transfer-declined"]
    scenario = dataclasses.replace(
        base,
        name=f"transfer-{person}",
        people={FRONT_DESK: ScriptedPerson(outcome=person)},
        expect=dataclasses.replace(base.expect, transfer=person),
    )
    async with simulated(scenario, transfer_ring_timeout=5) as (world, outcome):
        assert outcome.problems == []
        call = world.call(outcome.call_sid)
        assert call is not None and len(call.streams) == 2
        [leg] = call.legs
        assert leg.status == person and leg.heard == []
        [action] = [w for w in call.webhooks if "DialCallStatus" in w.params]
        assert action.params["DialCallStatus"] == person
        assert "<Stream" in action.body
        second = world.model.sessions[1].received
        [create, *_] = [e for e in second if e["type"] == "response.create"]
        assert "offer to book a call-back" in create["response"]["instructions"]


async def test_twilio_refusing_the_update_leaves_the_call_with_the_agent() -> None:
    def make() -> RealtimeScript:
        args = {"target": "frontdesk", "reason": "asked", "summary": TRANSFER_SUMMARY}
        return RealtimeScript(
            responses=[
                line(f"Hi, this is Dana from {BUSINESS}."),
                line("Connecting you now.", tools=[("transfer_call", args)]),
                line("Sorry, I could not put you through. Goodbye!", tools=[("end_call", {})]),
            ],
            user_transcripts=[CLIPS["talk_to_someone"]],
        )

    scenario = Scenario(
        name="transfer-refused",
        description="Twilio refuses the call update",
        callee=lambda world: ScriptedCallee([WaitForAgent(), Say("talk_to_someone")]),
        script=make,
        expect=Expectation(
            status="completed", tools=["transfer_call", "end_call"], transfer="failed"
        ),
        settings={"transfer_targets": f"frontdesk={FRONT_DESK}"},
    )
    world = await start_world(scenario, speed=SPEED)
    # The request after the call's creation (the update) fails as Twilio would.
    world.rest.on_call_created.append(
        lambda call: world.rest.fail_next.append((503, 20503, "Service Unavailable"))
    )
    try:
        outcome = await run_call(world, io.StringIO(), limit=60)
        assert outcome.problems == []
        call = world.call(outcome.call_sid)
        assert call is not None and call.legs == [] and len(call.streams) == 1
        creates = [e for e in world.model.sessions[0].received if e["type"] == "response.create"]
        assert "could not be started" in str(creates[-1])
        assert "Sorry, I could not put you through." in outcome.result.fullText
        assert outcome.record is not None and outcome.record.transfer is not None
        assert outcome.record.transfer.status == "failed"
    finally:
        await world.stop()
