"""Nova Sonic end to end at the provider interface: the adapter against the emulator over
HTTP/2 (signed request, signed event chain, event-stream framing both ways)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest

from caller_engine.audio import mulaw
from caller_engine.aws import sigv4
from caller_engine.realtime.base import (
    AgentItem,
    AgentTranscript,
    AudioDelta,
    Closed,
    ConnectError,
    FunctionCall,
    HistoryItem,
    Interrupted,
    ProviderEvent,
    ResponseDone,
    ResponseStarted,
    SessionConfig,
    UserTranscript,
)
from caller_engine.realtime.nova_sonic import (
    BedrockTarget,
    NovaSonicConnector,
    NovaSonicOptions,
    NovaSonicSession,
)
from caller_engine.sim.nova_sonic import TEST_CREDENTIALS, NovaSonicEmulator
from caller_engine.sim.nova_sonic.auth import Refusal
from caller_engine.sim.openai.realtime.script import RealtimeScript, ScriptedResponse

MODEL = "amazon.nova-2-sonic-v1:0"
TOOLS = [
    {
        "type": "function",
        "name": "lookup",
        "description": "Look something up.",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
]
CONFIG = SessionConfig(instructions="You are a receptionist.", voice="tiffany", tools=TOOLS)
SPEECH = mulaw.tone(600, 300.0, 9000)
SILENCE = mulaw.silence(20)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
async def emulator() -> AsyncIterator[NovaSonicEmulator]:
    emu = NovaSonicEmulator(speedup=0, endpointing_ms=300)
    await emu.start()
    yield emu
    await emu.stop()


def options(
    emu: NovaSonicEmulator, credentials: sigv4.Credentials = TEST_CREDENTIALS, **kw: Any
) -> NovaSonicOptions:
    return NovaSonicOptions(BedrockTarget(emu.url, "us-east-1", MODEL, credentials), **kw)


def script(*responses: ScriptedResponse, users: list[str] | None = None) -> Any:
    return lambda: RealtimeScript(responses=list(responses), user_transcripts=list(users or []))


async def collect_until(
    session: NovaSonicSession, stop: Any, within: float = 5.0
) -> list[ProviderEvent]:
    seen: list[ProviderEvent] = []
    async with asyncio.timeout(within):
        async for event in session.events():
            seen.append(event)
            if stop(event):
                return seen
    return seen


async def speak(session: NovaSonicSession, audio: bytes, silence_ms: int = 400) -> None:
    frames = audio + mulaw.silence(silence_ms)
    for offset in range(0, len(frames), 160):
        assert session.send_audio(b64(frames[offset : offset + 160]))
        await asyncio.sleep(0)


async def test_greeting_then_a_caller_turn(emulator: NovaSonicEmulator) -> None:
    tone = mulaw.tone(400, 1000.0, 9000)
    emulator.script_factory = script(
        ScriptedResponse("Hello from the clinic.", audio=tone),
        ScriptedResponse("Sure.", audio=mulaw.tone(200, 600.0, 9000)),
        users=["I want to book."],
    )
    session = await NovaSonicConnector(options(emulator)).connect(CONFIG)
    await session.create_response(CONFIG.instructions + "\n\nSay: Hi, this is Acme Dental.")
    events = await collect_until(session, lambda e: isinstance(e, ResponseDone))
    audio = b"".join(base64.b64decode(e.payload) for e in events if isinstance(e, AudioDelta))
    assert audio == tone  # 8 kHz PCM16 both ways: μ-law → PCM → μ-law is exact
    assert [type(e) for e in events if not isinstance(e, AudioDelta)] == [
        ResponseStarted,
        AgentItem,
        AgentTranscript,
        ResponseDone,
    ]
    assert [e.text for e in events if isinstance(e, AgentTranscript)] == ["Hello from the clinic."]
    await speak(session, SPEECH)
    events = await collect_until(session, lambda e: isinstance(e, ResponseDone))
    assert [e.text for e in events if isinstance(e, UserTranscript)] == ["I want to book."]
    assert [e.text for e in events if isinstance(e, AgentTranscript)] == ["Sure."]
    model = emulator.sessions[0]
    assert model.system_prompt == "You are a receptionist."
    assert model.voice == "tiffany" and model.output_rate == 8000 and model.input_rate == 8000
    assert list(model.tools) == ["lookup"]
    interactive = [r["textInput"]["content"] for r in model.received if "textInput" in r]
    assert interactive[-1] == "Say: Hi, this is Acme Dental."
    assert bytes(model.input_audio)[: len(SPEECH) * 2] == mulaw.decode_to_bytes(SPEECH)
    await session.close()
    await asyncio.sleep(0.05)
    assert model.ended_cleanly
    stream = emulator.stream_of(model)
    assert stream.final_frame and stream.chain.count > 10
    assert emulator.stream_errors == []


async def test_tool_round_trip(emulator: NovaSonicEmulator) -> None:
    emulator.script_factory = script(
        ScriptedResponse(
            "Let me check.", audio=mulaw.tone(100), tool_calls=[("lookup", {"q": "x"})]
        ),
        ScriptedResponse("Found it.", audio=mulaw.tone(100)),
    )
    session = await NovaSonicConnector(options(emulator)).connect(CONFIG)
    await session.create_response("Greet.")
    events = await collect_until(session, lambda e: isinstance(e, FunctionCall))
    call = next(e for e in events if isinstance(e, FunctionCall))
    assert (call.name, call.arguments) == ("lookup", '{"q": "x"}')
    assert not session.quiet
    await session.send_tool_result(call.call_id, '{"answer": 42}')
    events = await collect_until(session, lambda e: isinstance(e, ResponseDone))
    assert [e.text for e in events if isinstance(e, AgentTranscript)] == ["Found it."]
    assert emulator.sessions[0].tool_results == {call.call_id: '{"answer": 42}'}
    await session.close()


async def test_barge_in_is_reported_once_and_later_audio_is_dropped(
    emulator: NovaSonicEmulator,
) -> None:
    emulator.speedup = 2.0  # audio at twice real time: the caller can talk over it
    emulator.late_chunks = 2
    emulator.script_factory = script(
        ScriptedResponse("We have many openings this week.", audio=mulaw.tone(3000)),
        ScriptedResponse("Go ahead."),
        users=["Wait."],
    )
    session = await NovaSonicConnector(options(emulator)).connect(CONFIG)
    await session.create_response("Greet.")
    deltas = 0

    def tenth_delta(event: ProviderEvent) -> bool:
        nonlocal deltas
        deltas += isinstance(event, AudioDelta)
        return deltas == 10

    await collect_until(session, tenth_delta)  # a second of the 3 s turn was generated
    talk = asyncio.create_task(speak(session, SPEECH, 400))
    events = await collect_until(session, lambda e: isinstance(e, ResponseDone))
    await talk
    interrupted = [e for e in events if isinstance(e, Interrupted)]
    assert len(interrupted) == 1
    cut = interrupted[0].response_id
    after = events[events.index(interrupted[0]) :]
    assert not [e for e in after if isinstance(e, AudioDelta) and e.response_id == cut]
    text = next(e.text for e in events if isinstance(e, AgentTranscript))
    assert 0 < len(text) < len("We have many openings this week.")
    assert emulator.sessions[0].barge_ins == 1
    await session.close()


@pytest.mark.parametrize(
    ("refusal", "fatal"),
    [
        (Refusal(403, "AccessDeniedException", "no access"), True),
        (Refusal(429, "ThrottlingException", "Too many requests"), False),
        (Refusal(503, "ServiceUnavailableException", "busy"), False),
    ],
)
async def test_refusals_map_to_fatal_or_not(
    emulator: NovaSonicEmulator, refusal: Refusal, fatal: bool
) -> None:
    emulator.refuse_next.append(refusal)
    with pytest.raises(ConnectError) as caught:
        await NovaSonicConnector(options(emulator)).connect(CONFIG)
    assert caught.value.fatal is fatal
    assert refusal.error_type in str(caught.value)


async def test_bad_credentials_are_refused_like_bedrock(emulator: NovaSonicEmulator) -> None:
    wrong_secret = sigv4.Credentials(TEST_CREDENTIALS.access_key_id, "not-the-secret")
    with pytest.raises(ConnectError) as caught:
        await NovaSonicConnector(options(emulator, wrong_secret)).connect(CONFIG)
    assert caught.value.fatal and "InvalidSignatureException" in str(caught.value)
    unknown = sigv4.Credentials("AKIDUNKNOWN", "x")
    with pytest.raises(ConnectError) as caught:
        await NovaSonicConnector(options(emulator, unknown)).connect(CONFIG)
    assert "UnrecognizedClientException" in str(caught.value)


async def test_a_stream_error_closes_the_session_for_a_reconnect(
    emulator: NovaSonicEmulator,
) -> None:
    session = await NovaSonicConnector(options(emulator)).connect(CONFIG)
    model = await emulator.wait_for_session()
    emulator.fail_stream(model, "throttlingException", "Too many tokens")
    events = await collect_until(session, lambda e: isinstance(e, Closed))
    closed = events[-1]
    assert isinstance(closed, Closed) and not closed.fatal
    assert "throttlingException" in closed.reason
    await session.close()


async def test_a_refused_setup_is_a_refusal_and_later_validation_errors_are_not(
    emulator: NovaSonicEmulator,
) -> None:
    bad_voice = SessionConfig(instructions="Hi.", voice="nobody")
    session = await NovaSonicConnector(options(emulator)).connect(bad_voice)
    events = await collect_until(session, lambda e: isinstance(e, Closed))
    closed = events[-1]
    assert isinstance(closed, Closed) and closed.fatal and closed.code == "model_refused"
    assert "voiceId" in closed.reason
    await session.close()

    emulator.script_factory = script(ScriptedResponse("Hello.", audio=mulaw.tone(100)))
    session = await NovaSonicConnector(options(emulator)).connect(CONFIG)
    await session.create_response("Greet.")
    await collect_until(session, lambda e: isinstance(e, ResponseDone))
    timeout = "Timed out waiting for input events InternalErrorCode=531"
    emulator.fail_stream(emulator.sessions[-1], "validationException", timeout)
    events = await collect_until(session, lambda e: isinstance(e, Closed))
    closed = events[-1]
    assert isinstance(closed, Closed) and closed.code is None and not closed.fatal
    await session.close()


@pytest.mark.parametrize("fault", ["reset", "goaway"])
async def test_reset_and_goaway_close_the_session(emulator: NovaSonicEmulator, fault: str) -> None:
    session = await NovaSonicConnector(options(emulator)).connect(CONFIG)
    model = await emulator.wait_for_session()
    if fault == "reset":
        emulator.reset_stream(model)
    else:
        emulator.goaway(model, code=2)
    events = await collect_until(session, lambda e: isinstance(e, Closed))
    assert isinstance(events[-1], Closed) and not events[-1].fatal
    assert not session.send_audio(b64(SILENCE))
    await session.close()


async def test_renewal_moves_the_conversation_to_a_new_stream(
    emulator: NovaSonicEmulator,
) -> None:
    emulator.script_factory = script(
        ScriptedResponse("Hello.", audio=mulaw.tone(100)),
        ScriptedResponse("Still here.", audio=mulaw.tone(100)),
        users=["Are you there?"],
    )
    session = await NovaSonicConnector(options(emulator)).connect(CONFIG)
    await session.create_response("Greet.")
    await collect_until(session, lambda e: isinstance(e, ResponseDone))

    async def caller() -> None:
        for _ in range(40):  # caller audio keeps flowing across the switch
            assert session.send_audio(b64(SILENCE))
            await asyncio.sleep(0.01)

    talking = asyncio.create_task(caller())
    await asyncio.sleep(0.1)
    await session.renew()
    await talking
    first, second = emulator.sessions
    await asyncio.sleep(0.05)
    assert session.renewals == 1 and first.ended_cleanly
    assert second.system_prompt == "You are a receptionist."
    assert second.history == [("USER", "[The call was answered.]"), ("ASSISTANT", "Hello.")]
    # nothing the caller said is lost: old + new stream hold all of it (new has a replay)
    assert len(first.input_audio) + len(second.input_audio) >= 40 * 320
    await session.close()
    assert emulator.stream_errors == []


async def test_history_is_replayed_before_the_audio(emulator: NovaSonicEmulator) -> None:
    session = await NovaSonicConnector(options(emulator)).connect(CONFIG)
    await session.replay(
        [
            HistoryItem("assistant", "Hello, this is the clinic."),
            HistoryItem("user", "Hi."),
            HistoryItem("user", "I need a cleaning."),
            HistoryItem("tool_call", '{"day": "mon"}', "c1", "check"),
            HistoryItem("tool_output", '{"free": true}', "c1"),
        ]
    )
    assert session.send_audio(b64(SILENCE))
    await asyncio.sleep(0.05)
    model = emulator.sessions[0]
    assert model.history == [
        ("USER", "[The call was answered.]"),
        ("ASSISTANT", "Hello, this is the clinic."),
        ("USER", "Hi.\nI need a cleaning."),
        ("ASSISTANT", '[called check with {"day": "mon"}]'),
        ("USER", '[result: {"free": true}]'),
    ]
    assert emulator.stream_errors == []
    await session.close()


async def test_a_renewal_forced_while_a_tool_runs_sends_its_result_as_text(
    emulator: NovaSonicEmulator,
) -> None:
    shared = RealtimeScript(
        responses=[
            ScriptedResponse(
                "Let me check.", audio=mulaw.tone(100), tool_calls=[("lookup", {"q": "x"})]
            ),
            ScriptedResponse("Found it.", audio=mulaw.tone(100)),
        ]
    )
    emulator.script_factory = lambda: shared
    session = await NovaSonicConnector(options(emulator, renew_after=1.0, renew_wait=0.3)).connect(
        CONFIG
    )
    await session.create_response("Greet.")
    events = await collect_until(session, lambda e: isinstance(e, FunctionCall))
    call = next(e for e in events if isinstance(e, FunctionCall))
    await emulator.wait_for_session(2, within=3)  # forced: the tool call is still open
    await asyncio.sleep(0.05)
    assert session.renewals == 1
    await session.send_tool_result(call.call_id, '{"answer": 42}')
    events = await collect_until(session, lambda e: isinstance(e, ResponseDone))
    assert [e.text for e in events if isinstance(e, AgentTranscript)] == ["Found it."]
    first, second = emulator.sessions
    assert first.tool_results == {} and first.ended_cleanly
    assert second.prompts == ['[Result of the earlier lookup: {"answer": 42}]']
    assert second.history[-1] == ("ASSISTANT", 'Let me check.\n[called lookup with {"q": "x"}]')
    assert emulator.stream_errors == []
    await session.close()


async def test_a_renewal_forced_mid_reply_ends_that_reply(emulator: NovaSonicEmulator) -> None:
    emulator.speedup = 1.0  # a 3 s reply takes 3 s to generate
    emulator.script_factory = script(ScriptedResponse("A long answer.", audio=mulaw.tone(3000)))
    session = await NovaSonicConnector(options(emulator, renew_after=1.0, renew_wait=0.3)).connect(
        CONFIG
    )
    await session.create_response("Greet.")
    events = await collect_until(session, lambda e: isinstance(e, ResponseDone))
    done = events[-1]
    assert isinstance(done, ResponseDone) and done.status == "incomplete"
    assert session.renewals == 1 and session.quiet
    await asyncio.wait_for(emulator.sessions[0].closed.wait(), 2)
    assert emulator.sessions[0].ended_cleanly and emulator.stream_errors == []
    await session.close()


def test_a_conversation_on_uvloop_the_loop_the_server_runs_on() -> None:
    import uvloop  # a dependency on every platform the server runs on

    async def main() -> tuple[list[ProviderEvent], list[tuple[str, str]]]:
        emu = NovaSonicEmulator(
            speedup=0, script_factory=script(ScriptedResponse("Hi.", audio=mulaw.tone(100)))
        )
        await emu.start()
        try:
            session = await NovaSonicConnector(options(emu)).connect(CONFIG)
            await session.create_response("Greet.")
            events = await collect_until(session, lambda e: isinstance(e, ResponseDone))
            await session.close()
            return events, emu.stream_errors
        finally:
            await emu.stop()

    events, errors = uvloop.run(main())
    assert [e.text for e in events if isinstance(e, AgentTranscript)] == ["Hi."]
    assert errors == []
