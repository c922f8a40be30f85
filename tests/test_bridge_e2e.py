"""The media bridge end to end: real server, Twilio media-stream emulator, Realtime emulator."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from caller_engine.audio import mulaw
from caller_engine.sim.openai.realtime import RealtimeScript, ScriptedResponse
from caller_engine.sim.twilio.media import TwilioMediaClient
from caller_engine.tools.registry import Tool, ToolContext, ToolOutput
from tests.bridge_env import BridgeEnv, bridge_env
from tests.conftest import ACCOUNT_SID, API_KEY, AUTH_TOKEN

GREETING = b"\x11" * 2400  # 300 ms of a recognizable (non-silent) pattern
SPEECH = mulaw.tone(600, 300.0, 9000)


def script(*responses: ScriptedResponse, users: list[str] | None = None) -> Any:
    return lambda: RealtimeScript(responses=list(responses), user_transcripts=list(users or []))


async def wait_for(predicate: Any, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():
            await asyncio.sleep(0.01)


def client_events(env: BridgeEnv, kind: str, index: int = 0) -> list[dict[str, Any]]:
    return [e for e in env.model.sessions[index].received if e.get("type") == kind]


async def test_prewarm_greeting_and_audio_passes_through_unchanged() -> None:
    greeting = ScriptedResponse(text="Hello from the clinic.", audio=GREETING)
    reply = ScriptedResponse(text="Sure.", audio=b"\x22" * 1600)
    async with bridge_env(script(greeting, reply, users=["I want to book."])) as env:
        call_sid = await env.initiate("cb-pass")
        await env.fetch_twiml("cb-pass", call_sid)
        # The model session is opened and configured at TwiML time, before the stream.
        session = await env.model.wait_for_session(0)
        await session.wait_for("session.updated")
        assert client_events(env, "response.create") == []
        url, params = await env.fetch_twiml("cb-pass", call_sid)
        assert len(env.model.sessions) == 1  # a second fetch does not open another
        client = await env.open_stream(call_sid, url, params, speed=4.0)
        await client.wait_until(lambda: bytes(client.received_audio) == GREETING, 5)
        [create] = client_events(env, "response.create")
        assert "Start the call now" in create["response"]["instructions"]
        await client.wait_for_quiet(200, 5)
        await client.send_audio(SPEECH)
        await client.send_silence(800)
        await client.wait_until(lambda: len(client.received_audio) == len(GREETING) + 1600, 5)
        assert bytes(client.received_audio) == GREETING + b"\x22" * 1600
        await client.stop()
        await wait_for(session.closed.is_set, 1.0)  # the model socket closes within 1 s
        assert bytes(session.input_audio) == bytes(client.sent_audio)
        assert env.model.violations == []
        result = await env.result("cb-pass")
        assert [(e.role, e.text) for e in result.transcript] == [
            ("agent", "Hello from the clinic."),
            ("user", "I want to book."),
            ("agent", "Sure."),
        ]
        assert result.metrics["greetingLatencyMs"] >= 0
        assert result.status == "completed"
        assert result.summary is not None and result.summaryError is None
        [request] = env.chat.requests
        assert "[User]: I want to book." in request["messages"][1]["content"]


async def test_connects_at_start_without_prewarm() -> None:
    async with bridge_env(script(ScriptedResponse(text="Hi.", audio=GREETING))) as env:
        call_sid = await env.initiate("cb-cold")
        url, params = await env.fetch_twiml("cb-cold", call_sid)
        await env.services.bridge.prewarmer.close_all()  # as if TwiML came from elsewhere
        before = env.model.connection_attempts
        client = await env.open_stream(call_sid, url, params, speed=4.0)
        await client.wait_until(lambda: len(client.received_audio) == len(GREETING), 5)
        assert env.model.connection_attempts == before + 1
        await client.stop()


async def test_bad_token_closes_before_any_model_connection() -> None:
    async with bridge_env() as env:
        client = TwilioMediaClient(
            env.base.replace("http", "ws") + "/media-stream",
            auth_token=AUTH_TOKEN,
            call_sid="CAforged",
            account_sid=ACCOUNT_SID,
            custom_parameters={"callbackId": "cb-x", "token": "f" * 32},
            session=env.http,
        )
        await client.connect()
        await asyncio.wait_for(client.closed.wait(), 5)
        assert client.close_code == 1008
        assert env.model.connection_attempts == 0


@pytest.mark.parametrize("interrupt_response", [True, False])
async def test_barge_in_clears_truncates_and_drops_stale_audio(interrupt_response: bool) -> None:
    long_greeting = ScriptedResponse(text="We have many openings this week.", audio=b"\x11" * 24000)
    after = ScriptedResponse(text="Go ahead.", audio=b"\x22" * 800)
    async with bridge_env(
        script(long_greeting, after, users=["Wait."]),
        model_kwargs={"late_deltas": 3, "delta_interval": 0.01},
        vad_interrupt_response=interrupt_response,
    ) as env:
        client = await env.call("cb-barge", speed=2.0)
        await client.wait_until(lambda: client.played_bytes >= 4000, 5)
        await client.send_audio(SPEECH)
        await client.send_silence(800)
        await client.wait_until(lambda: b"\x22" in client.received_audio, 5)
        await client.wait_for_quiet(100, 5)
        assert len(client.clears) == 1
        session = env.model.sessions[0]
        [truncate] = session.truncations
        heard = truncate["audio_end_ms"]
        assert isinstance(heard, int)
        assert 0 < heard <= truncate["audio_sent_ms"]
        played_ms = client.played_audio.count(0x11) // 8
        # Never more than what played, and less by at most one mark interval (200 ms)
        # plus one model chunk (100 ms).
        assert -20 <= played_ms - heard <= 320
        # Nothing of the interrupted response arrives after the clear.
        after_clear = client.received_audio[client.received_audio.index(b"\x22") :]
        assert 0x11 not in after_clear
        cancels = client_events(env, "response.cancel")
        assert len(cancels) == (0 if interrupt_response else 1)
        errors = [e["error"].get("code") for e in session.events("error")]
        assert "response_cancel_not_active" not in errors
        assert env.model.violations == []
        await client.stop()
        result = await env.result("cb-barge")
        first = result.transcript[0]
        assert first.role == "agent" and first.interrupted
        assert len(first.text) < len("We have many openings this week.")
        assert result.metrics["interruptions"] == 1


async def test_tools_round_trip_unknown_tool_and_slow_tool_do_not_stall_audio() -> None:
    from pydantic import BaseModel

    class Args(BaseModel):
        seconds: float = 0.6

    async def slow(args: Args, ctx: ToolContext) -> ToolOutput:
        await asyncio.sleep(args.seconds)
        return {"status": "done"}

    calls = ScriptedResponse(
        text="Let me check.",
        audio=b"\x33" * 800,
        tool_calls=[
            ("slow_lookup", {"seconds": 0.6}),
            ("no_such_tool", {}),
            ("send_sms", {"to": "+15551230000", "message": "See you Monday at 10."}),
        ],
    )
    answer = ScriptedResponse(text="All set.", audio=b"\x44" * 800)
    async with bridge_env(
        script(ScriptedResponse(text="Hi.", audio=GREETING), calls, answer, users=["Text me."])
    ) as env:
        env.services.bridge.tools.register(Tool("slow_lookup", "slow", Args, slow, timeout=5))
        client = await env.call("cb-tools", speed=4.0)
        await client.wait_until(lambda: len(client.received_audio) >= len(GREETING), 5)
        await client.wait_for_quiet(100, 5)
        await client.send_audio(SPEECH)
        session = env.model.sessions[0]
        await session.wait_for("response.function_call_arguments.done", 3)
        audio_at_call = len(session.input_audio)
        await client.send_silence(400)
        await client.wait_until(lambda: b"\x44" in client.received_audio, 5)
        outputs = {
            o["item"]["call_id"]: orjson.loads(o["item"]["output"])
            for o in client_events(env, "conversation.item.create")
        }
        by_name = {
            c["name"]: c["call_id"] for c in session.events("response.function_call_arguments.done")
        }
        assert outputs[by_name["slow_lookup"]] == {"status": "done"}
        assert "unknown tool" in outputs[by_name["no_such_tool"]]["error"]
        assert outputs[by_name["send_sms"]]["status"] == "sent"
        assert env.rest.messages[0].body == "See you Monday at 10."
        # one response.create after the tool round (plus the greeting's)
        assert len(client_events(env, "response.create")) == 2
        # caller audio kept flowing to the model while the slow tool ran
        assert len(session.input_audio) > audio_at_call + 1600
        await client.stop()
        result = await env.result("cb-tools")
        assert {t.name: t.ok for t in result.toolCalls} == {
            "slow_lookup": True,
            "no_such_tool": False,
            "send_sms": True,
        }
        assert env.model.violations == []


async def test_end_call_hangs_up_after_goodbye_has_played() -> None:
    goodbye = ScriptedResponse(text="Goodbye!", audio=b"\x55" * 4000, tool_calls=[("end_call", {})])
    async with bridge_env(script(goodbye)) as env:
        env.stop_stream_on_hangup()
        client = await env.call("cb-end", speed=4.0)
        await asyncio.wait_for(client.closed.wait(), 10)
        call = env.rest.calls[client.call_sid]
        assert call.status == "completed"
        assert client.played_audio.count(0x55) == 4000  # the whole goodbye played first
        result = await env.result("cb-end")
        assert [t.name for t in result.toolCalls] == ["end_call"]
        # no follow-up response after end_call
        assert len(client_events(env, "response.create")) == 1


async def test_model_drop_reconnects_and_replays_the_conversation() -> None:
    first = script(ScriptedResponse(text="Hello there.", audio=GREETING))
    async with bridge_env(first) as env:
        client = await env.call("cb-drop", speed=4.0)
        await client.wait_until(lambda: len(client.received_audio) == len(GREETING), 5)
        await client.wait_for_quiet(50, 5)
        await env.model.sessions[0].drop()
        second = await env.model.wait_for_session(1, within=5)
        await second.wait_for("session.updated")
        replayed = [e for e in second.received if e.get("type") == "conversation.item.create"]
        assert replayed[0]["item"]["role"] == "assistant"
        assert replayed[0]["item"]["content"][0]["text"] == "Hello there."
        # the call goes on: caller audio now reaches the new session
        await client.send_audio(SPEECH)
        await wait_for(lambda: len(second.input_audio) >= len(SPEECH), 5)
        await client.stop()
        result = await env.result("cb-drop")
        assert result.metrics["modelReconnects"] == 1
        assert env.model.violations == []


async def test_model_drop_without_recovery_hangs_up_cleanly() -> None:
    async with bridge_env(script(ScriptedResponse(text="Hi.", audio=GREETING))) as env:
        env.stop_stream_on_hangup()
        client = await env.call("cb-dead", speed=4.0)
        await client.wait_until(lambda: len(client.received_audio) == len(GREETING), 5)
        env.model.reject_connections = 100
        await env.model.sessions[0].drop()
        await asyncio.wait_for(client.closed.wait(), 8)
        assert env.rest.calls[client.call_sid].status == "completed"
        result = await env.result("cb-dead")
        assert result.error is not None and result.error["code"] == "model_unavailable"


async def test_fatal_model_error_is_not_retried() -> None:
    async with bridge_env() as env:
        env.stop_stream_on_hangup()
        env.model.fatal_on_connect = "invalid_api_key"
        client = await env.call("cb-fatal", speed=4.0)
        await asyncio.wait_for(client.closed.wait(), 8)
        assert env.model.connection_attempts == 1
        assert env.rest.calls[client.call_sid].status == "completed"


async def test_garbage_frames_are_skipped_and_oversize_ends_only_that_call() -> None:
    async with bridge_env(script(ScriptedResponse(text="Hi.", audio=GREETING))) as env:
        client = await env.call("cb-garbage", speed=4.0)
        other = await env.call("cb-other", speed=4.0)
        await client.wait_until(lambda: len(client.received_audio) == len(GREETING), 5)
        for junk in [
            "not json",
            "[1,2]",
            '{"event":"media"}',
            '{"event":"media","media":{"payload":"***"}}',
            '{"event":"bogus"}',
            '{"event":"mark"}',
        ]:
            await client.send_raw(junk)
        await client.send_audio(SPEECH, paced=False)
        session = env.model.sessions[0]
        await wait_for(lambda: bytes(SPEECH) in bytes(session.input_audio), 5)
        assert not client.closed.is_set()
        await client.send_raw('{"event":"media","media":{"payload":"' + "A" * 70000 + '"}}')
        await asyncio.wait_for(client.closed.wait(), 5)
        assert not other.closed.is_set()
        await other.send_audio(SPEECH, paced=False)
        other_session = env.model.sessions[1]
        await wait_for(lambda: bytes(SPEECH) in bytes(other_session.input_audio), 5)
        await other.stop()
        result = await env.result("cb-garbage")
        assert result.metrics["malformedFrames"] == 5


async def test_dtmf_is_forwarded_and_recorded() -> None:
    async with bridge_env(script(ScriptedResponse(text="Hi.", audio=GREETING))) as env:
        client = await env.call("cb-dtmf", speed=4.0)
        await env.model.wait_for_session(0)
        await client.send_dtmf("7")
        await wait_for(
            lambda: any(
                "pressed the 7 key" in str(e.get("item")) for e in env.model.sessions[0].received
            ),
            5,
        )
        await client.stop()
        result = await env.result("cb-dtmf")
        assert any(e.role == "dtmf" and "7" in e.text for e in result.transcript)


async def test_answering_machine_hangs_up_and_reports_voicemail() -> None:
    async with bridge_env(script(ScriptedResponse(text="Hi.", audio=b"\x11" * 16000))) as env:
        env.stop_stream_on_hangup()
        client = await env.call("cb-vm", speed=1.0)
        await client.wait_until(lambda: len(client.received_audio) > 0, 5)
        url = f"{env.base}/webhooks/amd?callbackId=cb-vm"
        params = {
            "CallSid": client.call_sid,
            "AccountSid": ACCOUNT_SID,
            "AnsweredBy": "machine_start",
            "MachineDetectionDuration": "1800",
        }
        from caller_engine.telephony.signature import sign_twilio_request

        resp = await env.http.post(
            url,
            data=params,
            headers={"X-Twilio-Signature": sign_twilio_request(AUTH_TOKEN, url, params)},
        )
        assert resp.status == 200
        await asyncio.wait_for(client.closed.wait(), 5)
        result = await env.result("cb-vm")
        assert result.status == "voicemail" and result.answeredBy == "machine_start"


async def test_twenty_concurrent_calls_stay_isolated() -> None:
    async with bridge_env(script(ScriptedResponse(text="Hi.", audio=GREETING))) as env:
        clients = await asyncio.gather(
            *(env.call(f"cb-{i}", speed=8.0, to=f"+155512300{i:02d}") for i in range(20))
        )
        await asyncio.gather(
            *(c.wait_until(lambda c=c: len(c.received_audio) >= len(GREETING), 10) for c in clients)
        )
        for i, client in enumerate(clients):
            await client.send_audio(mulaw.tone(200, 200.0 + 40 * i, 9000), paced=False)
        await asyncio.gather(*(c.stop() for c in clients))
        for client in clients:
            sessions = [
                s for s in env.model.sessions if bytes(s.input_audio) == bytes(client.sent_audio)
            ]
            assert len(sessions) == 1
            assert bytes(client.received_audio).startswith(GREETING)
        assert env.model.violations == []


async def test_unsigned_stream_upgrade_is_refused() -> None:
    async with bridge_env() as env:
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await env.http.ws_connect(env.base.replace("http", "ws") + "/media-stream")


async def test_media_capture_records_the_inbound_stream(tmp_path: Any) -> None:
    import base64

    async with bridge_env(
        script(ScriptedResponse(text="Hi.", audio=GREETING)), media_capture_dir=str(tmp_path)
    ) as env:
        client = await env.call("cb-cap", speed=4.0)
        await client.send_audio(SPEECH, paced=False)
        session = await env.model.wait_for_session(0)
        await wait_for(lambda: bytes(SPEECH) in bytes(session.input_audio), 5)
        await client.stop()
        await env.result("cb-cap")
    [path] = list(tmp_path.iterdir())
    lines = [orjson.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["callbackId"] == "cb-cap" and lines[0]["encoding"] == "audio/x-mulaw"
    frames = [line for line in lines if "p" in line]
    assert b"".join(base64.b64decode(f["p"]) for f in frames) == bytes(client.sent_audio)
    assert lines[-1]["frames"] == len(frames)
    assert oct(path.stat().st_mode & 0o777) == "0o600"


async def test_machine_answer_for_a_stream_on_another_instance_hangs_up() -> None:
    from caller_engine.telephony.signature import sign_twilio_request

    async with bridge_env() as env:
        call_sid = await env.initiate("cb-elsewhere")
        # Another instance (same database) carries this call's stream.
        await env.services.store.stream_started("cb-elsewhere", "MZelsewhere")
        url = f"{env.base}/webhooks/amd?callbackId=cb-elsewhere"
        params = {"CallSid": call_sid, "AccountSid": ACCOUNT_SID, "AnsweredBy": "machine_start"}
        resp = await env.http.post(
            url,
            data=params,
            headers={"X-Twilio-Signature": sign_twilio_request(AUTH_TOKEN, url, params)},
        )
        assert resp.status == 200
        assert env.rest.calls[call_sid].status == "completed"


async def test_machine_answer_before_the_stream_waits_for_it() -> None:
    from caller_engine.telephony.signature import sign_twilio_request

    async with bridge_env() as env:
        call_sid = await env.initiate("cb-early")
        url = f"{env.base}/webhooks/amd?callbackId=cb-early"
        params = {"CallSid": call_sid, "AccountSid": ACCOUNT_SID, "AnsweredBy": "machine_start"}
        await env.http.post(
            url,
            data=params,
            headers={"X-Twilio-Signature": sign_twilio_request(AUTH_TOKEN, url, params)},
        )
        assert env.rest.calls[call_sid].status == "queued"  # nobody hung up yet


async def test_machine_answer_between_twiml_and_stream_is_acted_on() -> None:
    from caller_engine.telephony.signature import sign_twilio_request

    async with bridge_env(script(ScriptedResponse(text="Hi.", audio=b"\x11" * 16000))) as env:
        env.stop_stream_on_hangup()
        call_sid = await env.initiate("cb-between")
        url, params = await env.fetch_twiml("cb-between", call_sid)  # record read and cached
        amd_url = f"{env.base}/webhooks/amd?callbackId=cb-between"
        amd = {"CallSid": call_sid, "AccountSid": ACCOUNT_SID, "AnsweredBy": "machine_start"}
        await env.http.post(
            amd_url,
            data=amd,
            headers={"X-Twilio-Signature": sign_twilio_request(AUTH_TOKEN, amd_url, amd)},
        )
        client = await env.open_stream(call_sid, url, params, speed=1.0)
        await asyncio.wait_for(client.closed.wait(), 5)
        result = await env.result("cb-between")
        assert result.status == "voicemail"


async def test_unclaimed_warm_session_is_closed_after_the_timeout() -> None:
    async with bridge_env(prewarm_timeout=0.3) as env:
        call_sid = await env.initiate("cb-nostream")
        await env.fetch_twiml("cb-nostream", call_sid)
        session = await env.model.wait_for_session(0)
        await asyncio.wait_for(session.closed.wait(), 3)
        assert len(env.services.bridge.prewarmer) == 0


async def test_summary_failure_keeps_the_transcript() -> None:
    async with bridge_env(script(ScriptedResponse(text="Hello there.", audio=GREETING))) as env:
        env.chat.fail_next.extend(
            [(500, {"error": {"message": "boom", "type": "server_error"}})] * 5
        )
        client = await env.call("cb-nosummary", speed=4.0)
        await client.wait_until(lambda: len(client.received_audio) >= len(GREETING), 5)
        await client.stop()
        result = await env.result("cb-nosummary", within=20)
        assert result.summary is None
        assert result.summaryError == "the summary model failed: HTTP 500"
        assert result.fullText == "[Agent]: Hello there."


async def test_a_bug_in_one_call_ends_it_cleanly_and_spares_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from caller_engine.transcript.collector import TranscriptCollector

    original = TranscriptCollector.agent_text

    def faulty(self: TranscriptCollector, item_id: str, text: str, at: float) -> None:
        if text == "Boom.":
            raise RuntimeError("injected fault")
        original(self, item_id, text, at)

    monkeypatch.setattr(TranscriptCollector, "agent_text", faulty)
    async with bridge_env(script(ScriptedResponse(text="Hi.", audio=GREETING))) as env:
        env.stop_stream_on_hangup()
        healthy = await env.call("cb-healthy", speed=4.0)
        await healthy.wait_until(lambda: len(healthy.received_audio) >= len(GREETING), 5)
        env.model.script_factory = lambda: RealtimeScript([ScriptedResponse(text="Boom.")])
        broken = await env.call("cb-broken", speed=4.0)
        await asyncio.wait_for(broken.closed.wait(), 8)
        assert env.rest.calls[broken.call_sid].status == "completed"
        result = await env.result("cb-broken")
        assert result.error is not None and result.error["code"] == "internal_error"
        assert not healthy.closed.is_set()
        await healthy.send_audio(SPEECH, paced=False)
        session = env.model.sessions[0]
        await wait_for(lambda: bytes(SPEECH) in bytes(session.input_audio), 5)
        await healthy.stop()


async def test_a_request_crossing_a_response_the_model_started_is_asked_again() -> None:
    """The follow-up after a tool crosses a response server VAD started: the model refuses
    it (`conversation_already_has_active_response`); the bridge asks again once that response
    is done, and nothing the model said is dropped."""
    texting = ScriptedResponse(
        text="Texting you.",
        audio=b"\x33" * 800,
        tool_calls=[("send_sms", {"to": "+15551230000", "message": "See you at 10."})],
    )
    own = ScriptedResponse(text="Yes, go on.", audio=b"\x66" * 1600)  # paced: 2 deltas
    followup = ScriptedResponse(text="Sent.", audio=b"\x77" * 800)
    responses = (ScriptedResponse(text="Hi.", audio=GREETING), texting, own, followup)
    async with bridge_env(
        script(*responses, users=["Text me."]), model_kwargs={"delta_interval": 30.0}
    ) as env:
        env.model.delta_interval = 0.0
        client = await env.call("cb-cross", speed=4.0)
        session = await env.model.wait_for_session()
        add_item = session._handlers["conversation.item.create"]

        async def item_then_vad(event: dict[str, Any]) -> Any:
            # The caller speaks exactly when the tool output arrives: the server's own
            # response is live when the bridge's response.create comes in next.
            rejection = await add_item(event)
            if event["item"]["type"] == "function_call_output":
                env.model.delta_interval = 30.0  # `own` cannot end before the create arrives
                await session.user_speaks("One more thing.")
            return rejection

        def on_event(_: Any, event: dict[str, Any], at: float) -> None:
            if event["type"] == "error":
                env.model.delta_interval = 0.0  # refused: let `own` finish now
                for run in session.running_responses:
                    run.wake.set()

        session._handlers["conversation.item.create"] = item_then_vad
        env.model.on_server_event = on_event
        await client.wait_until(lambda: len(client.received_audio) >= len(GREETING), 5)
        await client.send_audio(SPEECH)
        await client.send_silence(600)
        await client.wait_until(lambda: b"\x77" in client.received_audio, 10)
        errors = session.events("error")
        assert [e["error"]["code"] for e in errors] == ["conversation_already_has_active_response"]
        assert errors[0]["error"]["event_id"] == "ce_response_create"
        creates = client_events(env, "response.create")
        assert len(creates) == 3  # greeting, the refused follow-up, the same one again
        assert creates[1] == creates[2]
        await client.wait_for_quiet(100, 5)
        assert client.received_audio.count(0x66) == 1600  # the model's own answer, whole
        assert client.received_audio.count(0x77) == 800  # and the follow-up after it
        await client.stop()
        result = await env.result("cb-cross")
        agent_lines = [e.text for e in result.transcript if e.role == "agent"]
        assert agent_lines[-2:] == ["Yes, go on.", "Sent."]


async def test_caller_audio_sent_while_the_model_session_opens_arrives_whole_and_in_order() -> None:
    """Setup never holds caller audio in the socket: frames that come while the model session
    is still opening wait in the bridge and reach the model first, in order, none dropped."""
    speech = bytes(range(256)) * 5  # 8 frames, none of them silent
    async with bridge_env(script(ScriptedResponse(text="Hi.", audio=GREETING))) as env:
        env.model.reject_connections = 3  # pre-warm, then two retries refused: about 1 s
        client = await env.call("cb-early", speed=4.0)
        await client.send_audio(speech, paced=False)
        await client.send_dtmf("5")
        assert not env.model.sessions  # all of it was sent before the session opened
        session = await env.model.wait_for_session(0, within=10)
        await wait_for(lambda: len(session.input_audio) >= len(speech), 5)
        frames = [
            bytes(session.input_audio[at : at + 160])
            for at in range(0, len(session.input_audio), 160)
        ]
        said = b"".join(f for f in frames if f != bytes([mulaw.SILENCE_BYTE]) * 160)
        assert said == speech
        await wait_for(
            lambda: any("pressed the 5 key" in str(e.get("item")) for e in session.received), 5
        )
        await client.stop()
        result = await env.result("cb-early")
        assert result.metrics["droppedInboundFrames"] == 0
        assert result.metrics["framesIn"] >= 8


async def test_a_caller_who_hangs_up_while_the_session_opens_gets_no_greeting() -> None:
    """The stream is read from its start, so a hang-up during setup is seen at once: the
    model session is not opened (and no greeting requested) for a caller who has gone."""
    async with bridge_env(script(ScriptedResponse(text="Hi.", audio=GREETING))) as env:
        env.model.reject_connections = 3  # the session would open after about 1 s
        client = await env.call("cb-gone", speed=4.0)
        await client.send_audio(SPEECH[:1600], paced=False)
        await client.stop()
        result = await env.result("cb-gone", within=10)
        assert env.model.sessions == []
        assert result.error is None  # the caller hung up: not a model failure


async def test_opt_out_lists_the_number_and_hangs_up_after_the_confirmation() -> None:
    greeting = ScriptedResponse(text="Hi!", audio=b"\x11" * 800, tool_calls=[("opt_out", {})])
    confirmation = ScriptedResponse(text="Understood. Goodbye!", audio=b"\x66" * 4000)
    async with bridge_env(script(greeting, confirmation)) as env:
        env.stop_stream_on_hangup()
        # A per-call subset without it: opt_out is offered all the same.
        client = await env.call("cb-stop", speed=4.0, agent={"tools": ["end_call"]})
        await asyncio.wait_for(client.closed.wait(), 10)
        tools = env.model.sessions[0].session["tools"]
        assert sorted(t["name"] for t in tools) == ["end_call", "opt_out"]
        assert env.rest.calls[client.call_sid].status == "completed"
        assert client.played_audio.count(0x66) == 4000  # the confirmation played in full
        assert len(client_events(env, "response.create")) == 2
        result = await env.result("cb-stop")
        assert result.optedOut is True
        assert [t.name for t in result.toolCalls] == ["opt_out"]
        entry = await env.services.store.dnc_get("+15551230000")
        assert entry is not None and (entry.source, entry.callback_id) == ("opt_out", "cb-stop")
        resp = await env.http.post(
            env.base + "/call/initiate",
            json={"callbackId": "cb-again", "to": "+15551230000"},
            headers={"X-API-Key": API_KEY},
        )
        assert resp.status == 403
        assert len(env.rest.calls) == 1
