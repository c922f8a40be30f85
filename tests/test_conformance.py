"""The provider conformance suite: the bridge end to end, once per realtime provider.

Each test runs against every harness in `tests.providers.HARNESSES` (a real server, the Twilio
media-stream emulator and that provider's emulator). A provider is done when it passes here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from caller_engine.sim.twilio.media import TwilioMediaClient
from caller_engine.tools.registry import Tool, ToolContext, ToolOutput
from tests.providers import PROVIDERS, Turn, agent_audio_ok, provider_env, tone_ulaw

pytestmark = pytest.mark.parametrize("provider", PROVIDERS)

SPEECH = tone_ulaw(600, 300.0)


async def wait_for(predicate: Any, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():
            await asyncio.sleep(0.01)


def clear_positions(client: TwilioMediaClient) -> list[int]:
    """How much audio had arrived at each `clear`."""
    positions: list[int] = []
    client.on_clear(lambda _now: positions.append(len(client.received_audio)))
    return positions


async def test_greeting_and_audio_both_ways(provider: str) -> None:
    greeting, reply = Turn("Hello from the clinic.", 400, 1000), Turn("Sure.", 300, 600)
    async with provider_env(provider, [greeting, reply], ["I want to book."]) as (env, model):
        client = await env.call("cb-pass", agent={"greeting": "Hi, this is Acme Dental."})
        await client.wait_until(lambda: len(client.received_audio) >= greeting.ms * 8 - 16, 5)
        await client.wait_for_quiet(150, 5)
        assert agent_audio_ok(model, bytes(client.received_audio), greeting)
        session = model.sessions[0]
        assert any("Hi, this is Acme Dental." in p for p in session.prompts())
        heard = len(client.received_audio)
        await client.send_audio(SPEECH)
        await client.send_silence(800)
        await client.wait_until(lambda: len(client.received_audio) >= heard + reply.ms * 8 - 16, 5)
        await client.wait_for_quiet(150, 5)
        assert agent_audio_ok(model, bytes(client.received_audio[heard:]), reply)
        await client.stop()
        await wait_for(session.closed.is_set, 1.0)  # the model socket closes within 1 s
        assert session.input_matches(bytes(client.sent_audio))
        result = await env.result("cb-pass")
        assert [(e.role, e.text) for e in result.transcript] == [
            ("agent", "Hello from the clinic."),
            ("user", "I want to book."),
            ("agent", "Sure."),
        ]
        assert result.provider == provider and result.providerSwitches == 0
        assert model.violations == []


async def test_barge_in_clears_and_no_stale_audio_follows(provider: str) -> None:
    long_greeting = Turn("We have many openings this week.", 3000, 1000)
    after = Turn("Go ahead.", 200, 600)
    async with provider_env(provider, [long_greeting, after], ["Wait."], late_chunks=3) as (
        env,
        model,
    ):
        client = await env.call("cb-barge", speed=2.0)
        clears = clear_positions(client)
        await client.wait_until(lambda: client.played_bytes >= 4000, 5)
        await client.send_audio(SPEECH)
        await client.send_silence(800)
        await wait_for(lambda: len(clears) == 1, 5)
        await client.wait_until(lambda: len(client.received_audio) > clears[0], 5)
        await client.wait_for_quiet(150, 5)
        assert len(client.clears) == 1
        # after the clear, only the next turn: nothing of the interrupted one
        assert agent_audio_ok(model, bytes(client.received_audio[clears[0] :]), after)
        await client.stop()
        result = await env.result("cb-barge")
        first = result.transcript[0]
        assert first.role == "agent" and first.interrupted
        assert 0 < len(first.text) < len(long_greeting.text)
        assert result.metrics["interruptions"] == 1
        assert model.violations == []


async def test_tools_unknown_tool_and_slow_tool_keep_audio_flowing(provider: str) -> None:
    from pydantic import BaseModel

    class Args(BaseModel):
        seconds: float = 0.6

    async def slow(args: Args, ctx: ToolContext) -> ToolOutput:
        await asyncio.sleep(args.seconds)
        return {"status": "done"}

    calls = Turn(
        "Let me check.",
        200,
        800,
        tool_calls=[
            ("slow_lookup", {"seconds": 0.6}),
            ("no_such_tool", {}),
            ("send_sms", {"to": "+15551230000", "message": "See you Monday at 10."}),
        ],
    )
    answer = Turn("All set.", 200, 600)
    async with provider_env(provider, [Turn("Hi.", 200), calls, answer], ["Text me."]) as (
        env,
        model,
    ):
        env.services.bridge.tools.register(Tool("slow_lookup", "slow", Args, slow, timeout=5))
        client = await env.call("cb-tools")
        await client.wait_until(lambda: len(client.received_audio) >= 1500, 5)
        await client.wait_for_quiet(100, 5)
        await client.send_audio(SPEECH)
        session = model.sessions[0]
        await wait_for(lambda: "send_sms" in session.tool_outputs(), 5)
        audio_at = session.input_ms()
        await client.send_silence(400)
        await wait_for(lambda: len(session.tool_outputs()) == 3, 5)
        outputs = session.tool_outputs()
        assert outputs["slow_lookup"] == {"status": "done"}
        assert "unknown tool" in outputs["no_such_tool"]["error"]
        assert outputs["send_sms"]["status"] == "sent"
        assert session.input_ms() > audio_at + 200  # caller audio flowed while the tool ran
        assert env.rest.messages[0].body == "See you Monday at 10."
        await client.wait_until(lambda: len(client.received_audio) >= 1500 + 1500 + 1500, 5)
        await client.stop()
        result = await env.result("cb-tools")
        assert {t.name: t.ok for t in result.toolCalls} == {
            "slow_lookup": True,
            "no_such_tool": False,
            "send_sms": True,
        }
        assert result.transcript[-1].text == "All set."
        assert model.violations == []


async def test_end_call_hangs_up_after_the_goodbye_played(provider: str) -> None:
    goodbye = Turn("Goodbye!", 500, 700, tool_calls=[("end_call", {})])
    async with provider_env(provider, [goodbye]) as (env, model):
        env.stop_stream_on_hangup()
        client = await env.call("cb-end")
        await asyncio.wait_for(client.closed.wait(), 10)
        assert env.rest.calls[client.call_sid].status == "completed"
        assert agent_audio_ok(model, bytes(client.played_audio), goodbye)
        result = await env.result("cb-end")
        assert [t.name for t in result.toolCalls] == ["end_call"]


async def test_model_drop_mid_call_is_survived(provider: str) -> None:
    async with provider_env(provider, [Turn("Hello there.", 200), Turn("Yes?", 200)]) as (
        env,
        model,
    ):
        client = await env.call("cb-drop")
        await client.wait_until(lambda: len(client.received_audio) >= 1500, 5)
        await client.wait_for_quiet(50, 5)
        await model.sessions[0].drop()
        second = await model.wait_for_session(1, within=5)
        before = second.input_ms()
        await client.send_audio(SPEECH)
        await wait_for(lambda: second.input_ms() >= before + 600, 5)
        await client.stop()
        result = await env.result("cb-drop")
        assert result.error is None
        assert result.transcript[0].text == "Hello there."
        assert model.violations == []


async def test_fatal_refusal_is_not_retried(provider: str) -> None:
    async with provider_env(provider) as (env, model):
        env.stop_stream_on_hangup()
        model.refuse(fatal=True)
        client = await env.call("cb-fatal")
        await asyncio.wait_for(client.closed.wait(), 8)
        assert model.connection_attempts == 1
        result = await env.result("cb-fatal")
        assert result.error is not None and result.error["code"] == "model_refused"


async def test_garbage_frames_are_skipped_and_oversize_ends_only_that_call(provider: str) -> None:
    async with provider_env(provider, [Turn("Hi.", 200)]) as (env, model):
        client = await env.call("cb-garbage")
        other = await env.call("cb-other")
        await client.wait_until(lambda: len(client.received_audio) >= 1500, 5)
        for junk in ["not json", "[1,2]", '{"event":"media"}', '{"event":"media","media":{}}']:
            await client.send_raw(junk)
        session = await model.wait_for_session(0)
        before = session.input_ms()
        await client.send_audio(SPEECH, paced=False)
        await wait_for(lambda: session.input_ms() >= before + 600, 5)
        await client.send_raw('{"event":"media","media":{"payload":"' + "A" * 70000 + '"}}')
        await asyncio.wait_for(client.closed.wait(), 5)
        assert not other.closed.is_set()
        await other.stop()
        result = await env.result("cb-garbage")
        assert result.metrics["malformedFrames"] == 4


async def test_twenty_concurrent_calls_stay_isolated(provider: str) -> None:
    async with provider_env(provider, [Turn("Hi.", 200)]) as (env, model):
        clients = await asyncio.gather(
            *(
                env.call(f"cb-{i}", speed=model.line_speed, to=f"+155512300{i:02d}")
                for i in range(20)
            )
        )
        await asyncio.gather(
            *(c.wait_until(lambda c=c: len(c.received_audio) >= 1500, 10) for c in clients)
        )
        for i, client in enumerate(clients):
            await client.send_audio(tone_ulaw(200, 200.0 + 100 * i), paced=False)
        await asyncio.gather(*(c.stop() for c in clients))
        await asyncio.gather(*(wait_for(s.closed.is_set, 5) for s in model.sessions))
        for client in clients:
            sent = bytes(client.sent_audio)
            assert sum(1 for s in model.sessions if s.input_matches(sent)) == 1
            assert agent_audio_ok(model, bytes(client.received_audio), Turn("Hi.", 200))
        assert model.violations == []
