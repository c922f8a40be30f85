"""Nova Sonic through the whole bridge: refusals that arrive in the stream after connecting,
and long calls that cross several stream renewals."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.providers import NovaHarness, Turn, provider_env, tone_ulaw

SPEECH = tone_ulaw(600, 300.0)


async def wait_for(predicate: Any, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_setup_refused_in_the_stream_is_model_refused_and_not_retried() -> None:
    # The service takes the request (HTTP 200) and then refuses the voice in the stream.
    async with provider_env("nova_sonic", [Turn("Hi.", 200)], nova_sonic_voice="nobody") as (
        env,
        model,
    ):
        assert isinstance(model, NovaHarness)
        env.stop_stream_on_hangup()
        client = await env.call("cb-voice")
        await asyncio.wait_for(client.closed.wait(), 8)
        result = await env.result("cb-voice")
        assert result.error is not None and result.error["code"] == "model_refused"
        assert "voiceId" in result.error["message"]
        assert model.connection_attempts == 1  # not retried
        assert [kind for kind, _ in model.emulator.stream_errors] == ["validationException"]
        assert env.rest.calls[client.call_sid].status == "completed"
        assert client.received_audio == bytearray()


async def test_setup_refused_in_the_stream_moves_the_call_to_the_fallback() -> None:
    async with provider_env(
        "nova_sonic", nova_sonic_voice="nobody", realtime_fallback="openai"
    ) as (env, model):
        client = await env.call("cb-voice-over", agent={"greeting": "Hi, this is Acme Dental."})
        await client.wait_until(lambda: len(client.received_audio) > 0, 10)  # OpenAI greets
        openai = await env.model.wait_for_session(0)
        created = [e for e in openai.received if e.get("type") == "response.create"]
        assert "Hi, this is Acme Dental." in str(created[0])  # greeted as the call asked
        await client.send_audio(SPEECH, paced=False)
        await wait_for(lambda: bytes(SPEECH) in bytes(openai.input_audio), 5)
        await client.stop()
        result = await env.result("cb-voice-over")
        assert result.provider == "openai" and result.providerSwitches == 1
        assert result.error is None
        assert model.connection_attempts == 1
