"""Gemini Live specifics end to end (resumption, refusals) and failover between providers."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from caller_engine.sim.gemini import GeminiLiveEmulator
from caller_engine.sim.server import LoopbackServer
from caller_engine.tools.registry import Tool, ToolContext, ToolOutput
from tests.providers import GEMINI_PATH, GeminiHarness, Turn, provider_env, tone_ulaw

SPEECH = tone_ulaw(600, 300.0)


async def wait_for(predicate: Any, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_go_away_resumes_with_the_handle_and_keeps_a_pending_tool_result() -> None:
    from pydantic import BaseModel

    class Args(BaseModel):
        seconds: float = 0.5

    async def slow(args: Args, ctx: ToolContext) -> ToolOutput:
        await asyncio.sleep(args.seconds)
        return {"status": "done"}

    turns = [Turn("Hi.", 200), Turn("Checking.", 200, tool_calls=[("slow_lookup", {})])]
    async with provider_env("gemini", [*turns, Turn("Done.", 200)], ["Look it up."]) as (
        env,
        model,
    ):
        assert isinstance(model, GeminiHarness)
        emulator = model.emulator
        env.services.bridge.tools.register(Tool("slow_lookup", "slow", Args, slow, timeout=5))
        client = await env.call("cb-resume")
        await client.wait_until(lambda: len(client.received_audio) >= 1500, 5)
        await client.send_audio(SPEECH)
        first = emulator.sessions[0]
        await wait_for(lambda: first.conversation is not None and bool(first.conversation.pending))
        await first.go_away(0.2)  # while the tool runs
        second = await emulator.wait_for_session(1)
        await wait_for(lambda: second.setup is not None)
        assert second.resumed
        await wait_for(lambda: "slow_lookup" in second.tool_outputs, 5)
        assert second.tool_outputs["slow_lookup"] == {"status": "done"}
        before = len(second.input_pcm)
        await wait_for(lambda: len(second.input_pcm) > before + 6400, 5)  # audio goes on
        await client.stop()
        result = await env.result("cb-resume")
        assert result.error is None and result.providerSwitches == 0
        assert result.metrics["modelReconnects"] == 0  # resumed inside the session
        assert emulator.violations == []


async def test_quota_at_start_is_unavailable_and_retried() -> None:
    async with provider_env("gemini", [Turn("Hi.", 200)]) as (env, model):
        assert isinstance(model, GeminiHarness)
        model.emulator.quota_exhausted = 2  # the pre-warm and the first retry
        client = await env.call("cb-quota")
        await client.wait_until(lambda: len(client.received_audio) >= 1500, 8)
        await client.stop()
        result = await env.result("cb-quota")
        assert result.error is None and model.connection_attempts == 3


async def test_primary_unreachable_at_start_fails_over_to_the_next_provider() -> None:
    async with provider_env("gemini", realtime_fallback="openai") as (env, model):
        model.refuse(fatal=False)
        client = await env.call("cb-over")
        await client.wait_until(lambda: len(client.received_audio) > 0, 10)  # OpenAI greets
        openai = await env.model.wait_for_session(0)
        await client.send_audio(SPEECH, paced=False)
        await wait_for(lambda: bytes(SPEECH) in bytes(openai.input_audio), 5)
        await client.stop()
        result = await env.result("cb-over")
        assert result.provider == "openai" and result.providerSwitches == 1
        assert result.error is None
        text = env.services.metrics.render().decode()
        assert (
            'caller_engine_provider_switches_total{from_provider="gemini",to_provider="openai"} 1.0'
            in text
        )


async def test_primary_dying_mid_call_moves_the_conversation_to_the_fallback() -> None:
    async with provider_env(
        "gemini", [Turn("Hello from Gemini.", 200)], realtime_fallback="openai"
    ) as (
        env,
        model,
    ):
        client = await env.call("cb-die")
        await client.wait_until(lambda: len(client.received_audio) >= 1500, 5)
        await client.wait_for_quiet(100, 5)
        model.refuse(fatal=False)
        await model.sessions[0].drop()
        openai = await env.model.wait_for_session(0, within=10)
        await openai.wait_for("session.updated")
        replayed = [e for e in openai.received if e.get("type") == "conversation.item.create"]
        assert replayed and replayed[0]["item"]["content"][0]["text"] == "Hello from Gemini."
        await client.send_audio(SPEECH, paced=False)
        await wait_for(lambda: bytes(SPEECH) in bytes(openai.input_audio), 5)
        await client.stop()
        result = await env.result("cb-die")
        assert result.provider == "openai" and result.providerSwitches == 1
        assert result.error is None
        assert env.model.violations == []


@pytest.mark.parametrize(
    ("setup", "code", "reason"),
    [
        (
            {
                "model": "models/gemini-3.8-live",
                "generationConfig": {"inputAudioTranscription": {}},
            },
            1007,
            "Unknown name \"inputAudioTranscription\" at 'setup.generation_config'",
        ),
        ({"model": "models/gemini-2.0-flash-live-001"}, 1008, "is not found for API version"),
        (
            {
                "model": "models/gemini-3.8-live",
                "generationConfig": {"responseModalities": ["AUDIO", "TEXT"]},
            },
            1007,
            "Request contains an invalid argument.",
        ),
    ],
)
async def test_emulator_refuses_what_the_service_refuses(
    setup: dict[str, Any], code: int, reason: str
) -> None:
    emulator = GeminiLiveEmulator(api_key="k")
    server = LoopbackServer(emulator.app())
    await server.start()
    try:
        async with connect(
            server.ws_url + GEMINI_PATH, additional_headers={"x-goog-api-key": "k"}
        ) as ws:
            await ws.send(orjson.dumps({"setup": setup}).decode())
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == code and reason in closed.value.rcvd.reason
    finally:
        await server.stop()


async def test_emulator_accepts_the_adapters_setup_and_sends_binary_frames() -> None:
    from caller_engine.realtime.base import SessionConfig
    from caller_engine.realtime.gemini import GeminiLiveConnector

    emulator = GeminiLiveEmulator(api_key="k")
    server = LoopbackServer(emulator.app())
    await server.start()
    try:
        connector = GeminiLiveConnector(server.ws_url + GEMINI_PATH, "gemini-3.8-live", "k")
        tools = [
            {
                "type": "function",
                "name": "end_call",
                "description": "hang up",
                "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
            }
        ]
        session = await connector.connect(SessionConfig("Be brief.", "Kore", tools))
        await session.close()
        assert emulator.violations == []
        assert emulator.sessions[0].setup is not None
    finally:
        await server.stop()


async def test_a_long_call_resumes_across_many_go_aways_with_audio_flowing() -> None:
    async with provider_env("gemini", [Turn("Hi.", 200)]) as (env, model):
        assert isinstance(model, GeminiHarness)
        emulator = model.emulator
        client = await env.call("cb-long", speed=4.0)
        await client.wait_until(lambda: len(client.received_audio) >= 1500, 5)
        switches = 8  # a lifetime of ~10 min each: a call of well over an hour
        for index in range(switches):
            session = emulator.sessions[index]
            await wait_for(lambda s=session: len(s.input_pcm) >= 6400)  # 200 ms reached it
            await session.go_away(0.05)
            following = await emulator.wait_for_session(index + 1)
            await wait_for(lambda f=following: f.setup is not None)
            assert following.resumed
        last = emulator.sessions[switches]
        await wait_for(lambda: len(last.input_pcm) >= 6400)
        await client.stop()
        result = await env.result("cb-long")
    assert result.error is None and result.providerSwitches == 0
    assert result.metrics["modelReconnects"] == 0  # every switch was a resumption
    # The caller's audio reached the model across the switches: what arrived (16 kHz PCM16)
    # covers what was sent (8 kHz μ-law) but the resampler's few ms at each switch.
    received_ms = sum(len(s.input_pcm) for s in emulator.sessions) / 32
    sent_ms = len(client.sent_audio) / 8
    assert received_ms >= sent_ms - 10 * (switches + 1)
    assert emulator.violations == []


async def test_go_away_before_any_resumption_handle_reconnects_with_the_conversation() -> None:
    async with provider_env("gemini", [Turn("Hello from Gemini.", 200)]) as (env, model):
        assert isinstance(model, GeminiHarness)
        emulator = model.emulator
        emulator.issue_handles = False
        client = await env.call("cb-nohandle", speed=4.0)
        await client.wait_until(lambda: len(client.received_audio) >= 1500, 5)
        await client.wait_for_quiet(100, 5)
        await emulator.sessions[0].go_away(0.05)
        second = await emulator.wait_for_session(1, within=10)
        await wait_for(lambda: second.setup is not None)
        assert not second.resumed  # nothing to resume: a new session, the call goes on
        conversation = second.conversation
        assert conversation is not None  # the conversation so far is replayed
        greeting = {"role": "model", "text": "Hello from Gemini."}
        await wait_for(lambda: greeting in conversation.history)
        before = len(second.input_pcm)
        await wait_for(lambda: len(second.input_pcm) > before + 6400)
        await client.stop()
        result = await env.result("cb-nohandle")
    assert result.error is None and result.provider == "gemini"
    assert result.metrics["modelReconnects"] == 1
    assert emulator.violations == []
