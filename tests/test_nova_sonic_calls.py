"""Nova Sonic through the whole bridge: refusals that arrive in the stream after connecting,
and long calls that cross several stream renewals."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from caller_engine.audio import mulaw
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


def line_noise(ms: int, seed: int) -> bytes:
    """Quiet line noise (far below speech energy) whose every frame differs: where one
    stream's audio ends and the next one's begins can be found exactly."""
    rng = random.Random(seed)
    return mulaw.encode([rng.randint(-60, 60) for _ in range(ms * 8)])


def stitch(streams: list[bytes]) -> bytes:
    """The caller audio of consecutive streams with each renewal's replay (a repeat of the
    latest audio the previous streams had) removed."""
    total = bytearray(streams[0])
    for data in streams[1:]:
        overlap = next(
            k
            for k in range(min(len(data), len(total)) // 320 * 320, -1, -320)
            if data[:k] == total[len(total) - k :]
        )
        total += data[overlap:]
    return bytes(total)


async def test_a_long_call_survives_many_renewals_without_losing_caller_audio() -> None:
    turns = [Turn("Hello, this is the clinic.", 300)]
    turns += [Turn(f"Answer {i}.", 300) for i in range(1, 4)]
    users = [f"Question {i}." for i in range(1, 4)]
    async with provider_env("nova_sonic", turns, users, nova_sonic_renew_after=1.0) as (
        env,
        model,
    ):
        assert isinstance(model, NovaHarness)
        emulator = model.emulator
        shared = emulator.script_factory
        assert shared is not None
        script = shared()  # one conversation across every stream
        emulator.script_factory = lambda: script
        emulator.stream_limit_s = 3.0  # a stream not renewed in time fails the call's check
        client = await env.call("cb-long", speed=4.0)
        sent = bytearray()

        async def say(audio: bytes) -> None:
            sent.extend(audio)
            await client.send_audio(audio)

        async def noise_until(predicate: Any, within: float = 10.0) -> None:
            async with asyncio.timeout(within):
                seed = len(sent)
                while not predicate():
                    seed += 1
                    await say(line_noise(200, seed))

        await client.wait_until(lambda: len(client.received_audio) >= 2400 - 16, 5)
        for _ in range(3):
            streams = len(emulator.sessions)
            await noise_until(lambda n=streams: len(emulator.sessions) > n)  # a renewal
            heard = len(client.received_audio)
            await say(SPEECH)
            await noise_until(lambda h=heard: len(client.received_audio) >= h + 2400 - 16)
        streams = len(emulator.sessions)
        await noise_until(lambda: len(emulator.sessions) > streams)
        await say(line_noise(400, 0))
        await client.stop()
        await wait_for(emulator.sessions[-1].closed.is_set, 2)
        result = await env.result("cb-long")

    assert len(emulator.sessions) >= 5  # four renewals at least
    assert emulator.stream_errors == [] and emulator.violations == []
    assert all(s.ended_cleanly for s in emulator.sessions)
    assert result.error is None and result.metrics["modelReconnects"] == 0
    assert result.metrics["droppedInboundFrames"] == 0
    assert [(e.role, e.text) for e in result.transcript] == [
        ("agent", "Hello, this is the clinic."),
        ("user", "Question 1."),
        ("agent", "Answer 1."),
        ("user", "Question 2."),
        ("agent", "Answer 2."),
        ("user", "Question 3."),
        ("agent", "Answer 3."),
    ]
    streams_audio = [bytes(s.input_audio) for s in emulator.sessions]
    assert stitch(streams_audio) == mulaw.decode_to_bytes(bytes(client.sent_audio))
