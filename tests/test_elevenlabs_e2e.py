"""ElevenLabs-specific behaviour through the real server, Twilio's media emulator and the
ElevenLabs emulator (the shared conformance suite covers what every provider must do)."""

from __future__ import annotations

import asyncio
from typing import Any

from caller_engine.sim.elevenlabs import ElevenLabsEmulator
from tests.providers import (
    ELEVENLABS_AGENT,
    Turn,
    agent_audio_ok,
    elevenlabs_env,
    tone_quality,
    tone_ulaw,
)

SPEECH = tone_ulaw(600, 300.0)


def emulator_of(model: Any) -> ElevenLabsEmulator:
    emulator = model.emulator
    assert isinstance(emulator, ElevenLabsEmulator)
    return emulator


async def wait_for(predicate: Any, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():
            await asyncio.sleep(0.01)


def env(turns: list[Turn] | None = None, users: list[str] | None = None, **settings: Any) -> Any:
    return elevenlabs_env(list(turns or []), list(users or []), 0, settings)


async def test_greeting_held_until_start_while_pings_are_answered() -> None:
    greeting = Turn("Hello, this is the clinic.", 800, 900)
    async with env([greeting]) as (bridge, model):
        emulator = emulator_of(model)
        emulator.ping_interval = 0.02
        call_sid = await bridge.initiate("cb-held")
        url, params = await bridge.fetch_twiml("cb-held", call_sid)  # the session opens now
        conversation = await emulator.wait_for_conversation()
        await wait_for(lambda: any(m.get("type") == "audio" for m in conversation.sent))
        await wait_for(lambda: len(conversation.pongs) >= 5)  # answered while held
        client = await bridge.open_stream(call_sid, url, params)
        await client.wait_until(lambda: len(client.received_audio) >= 800 * 8, 5)
        await client.wait_for_quiet(100, 5)
        assert bytes(client.received_audio) == tone_ulaw(800, 900)  # nothing lost, unchanged
        await client.stop()
        await bridge.result("cb-held")
        assert conversation.violations == []
        sent_ids = {m["ping_event"]["event_id"] for m in conversation.sent if m["type"] == "ping"}
        assert set(conversation.pongs) <= sent_ids


async def test_initiation_carries_the_call_overrides_and_metadata() -> None:
    async with env([Turn("Hi.", 200)]) as (bridge, model):
        client = await bridge.call(
            "cb-init",
            agent={
                "greeting": "Hi {{first_name}}!",
                "instructions": "Be brief.",
                "voice": "voice_123",
                "metadata": {"first_name": "Ann", "leadId": 4711, "tags": ["vip"]},
            },
        )
        conversation = await emulator_of(model).wait_for_conversation()
        await client.stop()
        assert conversation.initiation == {
            "type": "conversation_initiation_client_data",
            "conversation_config_override": {
                "agent": {"prompt": {"prompt": "Be brief."}, "first_message": "Hi {{first_name}}!"},
                "tts": {"voice_id": "voice_123"},
            },
            "dynamic_variables": {"first_name": "Ann", "leadId": 4711, "tags": '["vip"]'},
        }


async def test_disabled_override_ends_the_call_as_refused_naming_the_setting() -> None:
    async with env([Turn("Hi.", 200)]) as (bridge, model):
        bridge.stop_stream_on_hangup()
        emulator = emulator_of(model)
        emulator.agents[ELEVENLABS_AGENT].allowed_overrides.clear()
        client = await bridge.call("cb-override", agent={"greeting": "Hello!"})
        await asyncio.wait_for(client.closed.wait(), 8)
        result = await bridge.result("cb-override")
        assert result.error is not None and result.error["code"] == "model_refused"
        assert "agent.first_message" in result.error["message"]
        assert "platform_settings.overrides" in result.error["message"]
        assert emulator.connection_attempts == 1  # not retried


async def test_quota_is_model_unavailable_and_not_retried() -> None:
    async with env([Turn("Hi.", 200)]) as (bridge, model):
        bridge.stop_stream_on_hangup()
        emulator = emulator_of(model)
        emulator.quota_exhausted = True
        client = await bridge.call("cb-quota")
        await asyncio.wait_for(client.closed.wait(), 8)
        result = await bridge.result("cb-quota")
        assert result.error is not None and result.error["code"] == "model_unavailable"
        assert "quota" in result.error["message"]
        assert emulator.connection_attempts == 1


async def test_unsupported_audio_format_is_refused() -> None:
    async with env([Turn("Hi.", 200)]) as (bridge, model):
        bridge.stop_stream_on_hangup()
        emulator_of(model).agents[ELEVENLABS_AGENT].output_format = "mp3_44100_128"
        client = await bridge.call("cb-mp3")
        await asyncio.wait_for(client.closed.wait(), 8)
        result = await bridge.result("cb-mp3")
        assert result.error is not None and result.error["code"] == "model_refused"
        assert "ulaw_8000" in result.error["message"]


async def test_pcm_agent_goes_through_the_conversion_path() -> None:
    greeting = Turn("Hello.", 600, 700)
    async with env([greeting, Turn("Yes.", 300, 500)], ["Hi."]) as (bridge, model):
        agent = emulator_of(model).agents[ELEVENLABS_AGENT]
        agent.input_format = agent.output_format = "pcm_16000"
        client = await bridge.call("cb-pcm")
        await client.wait_until(lambda: len(client.received_audio) >= 600 * 8 - 16, 5)
        await client.wait_for_quiet(100, 5)
        assert abs(len(client.received_audio) - 600 * 8) <= 16
        assert tone_quality(bytes(client.received_audio), 700) >= 30
        await client.send_audio(SPEECH)
        conversation = await emulator_of(model).wait_for_conversation()
        await wait_for(lambda: len(conversation.input_audio) >= 600 * 32 - 64)
        await client.stop()
        assert len(conversation.input_audio) % 2 == 0  # 16-bit PCM at 16 kHz, not μ-law


async def test_correction_sets_the_heard_text() -> None:
    long_greeting = Turn("We have many openings this week for you.", 3000, 1000)
    async with env([long_greeting, Turn("Go ahead.", 200, 600)], ["Wait."]) as (bridge, model):
        emulator = emulator_of(model)
        emulator.correction = lambda text, fraction: "We have many"
        client = await bridge.call("cb-correct", speed=2.0)
        await client.wait_until(lambda: client.played_bytes >= 4000, 5)
        await client.send_audio(SPEECH)
        await client.send_silence(800)
        await wait_for(lambda: len(client.clears) == 1, 5)
        await client.wait_for_quiet(300, 5)
        await client.stop()
        result = await bridge.result("cb-correct")
        first = result.transcript[0]
        assert (first.role, first.text, first.interrupted) == ("agent", "We have many", True)
        assert [e.text for e in result.transcript[1:]] == ["Wait.", "Go ahead."]


async def test_service_close_1002_reconnects_with_history_and_no_second_greeting() -> None:
    turns = [Turn("Hello there.", 300), Turn("Noted.", 200)]
    async with env(turns, ["I need a new date."]) as (bridge, model):
        emulator = emulator_of(model)
        client = await bridge.call("cb-1002", agent={"greeting": "Hello there."})
        await client.wait_until(lambda: len(client.received_audio) >= 300 * 8, 5)
        await client.wait_for_quiet(100, 5)
        await client.send_audio(SPEECH)
        await client.send_silence(500)
        await client.wait_until(lambda: len(client.received_audio) >= 500 * 8, 5)
        first = await emulator.wait_for_conversation(0)
        await first.drop(1002, "llm_timeout")
        second = await emulator.wait_for_conversation(1)
        await wait_for(lambda: bool(second.contextual_updates))
        context = second.contextual_updates[0]
        assert "Agent: Hello there." in context and "Caller: I need a new date." in context
        init = second.initiation or {}
        assert init["conversation_config_override"]["agent"]["first_message"] == ""
        await client.stop()
        result = await bridge.result("cb-1002")
        assert result.error is None and result.metrics["modelReconnects"] == 1


async def test_public_agent_opens_without_a_signed_url() -> None:
    async with env([Turn("Hi.", 200)], elevenlabs_api_key=None) as (bridge, model):
        emulator = emulator_of(model)
        emulator.agents[ELEVENLABS_AGENT].enable_auth = False
        client = await bridge.call("cb-public")
        await client.wait_until(lambda: len(client.received_audio) >= 1600, 5)
        await client.stop()
        assert emulator.rest_requests == []
        assert agent_audio_ok(model, bytes(client.received_audio), Turn("Hi.", 200))


async def test_long_bursts_arrive_byte_exact_with_marks() -> None:
    speech = Turn("A long explanation.", 12000, 800)
    async with env([speech]) as (bridge, model):
        client = await bridge.call("cb-burst", speed=8.0)
        await client.wait_until(lambda: len(client.received_audio) >= 12000 * 8, 10)
        await client.wait_for_quiet(200, 5)
        assert bytes(client.received_audio) == tone_ulaw(12000, 800)
        conversation = await emulator_of(model).wait_for_conversation()
        frames = [m for m in conversation.sent if m["type"] == "audio"]
        assert len(frames) < 12000 // 250  # it came in bursts of 0.25-2.5 s
        # marks every ~200 ms of audio (a burst's short tail carries into the next mark)
        assert len(client.mark_requests) >= 12000 // 250
        await client.stop()


async def test_a_deployment_without_an_openai_key_calls_and_skips_the_summary(
    monkeypatch: Any,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    async with env([Turn("Hi.", 200)], openai_api_key=None) as (bridge, _model):
        client = await bridge.call("cb-no-openai")
        await client.wait_until(lambda: len(client.received_audio) >= 1600, 5)
        await client.stop()
        result = await bridge.result("cb-no-openai")
        assert result.provider == "elevenlabs" and result.summary is None
        assert [e.text for e in result.transcript] == ["Hi."]
