"""The emulated phone network: call flow, callbacks, AMD, TwiML, streams and scripted callees.

Against the real server (status/AMD callbacks, TwiML, stream upgrade, REST hang-up) and
against a small voice application written here (scripted callee steps, TwiML after the
stream, time limit).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType, web

from caller_engine.sim.callee import (
    BargeIn,
    Callee,
    HangUp,
    Say,
    ScriptedCallee,
    WaitForAgent,
    unanswered,
    voicemail,
)
from caller_engine.sim.clips import load_clip
from caller_engine.sim.server import LoopbackServer
from caller_engine.sim.twilio.phone import ActiveEmulatedCall, PhoneNetwork
from caller_engine.sim.twilio.rest import EmulatedCall, TwilioRestEmulator
from caller_engine.sim.twilio.twiml_reader import (
    ConnectStream,
    Hangup,
    Pause,
    Play,
    TwimlError,
    Unsupported,
    parse_twiml,
)
from caller_engine.sim.twilio.twiml_reader import Say as SayVerb
from caller_engine.sim.twilio.webhooks import rebase, requested_events, status_params
from caller_engine.telephony.rest import CALLBACK_RETRY as RETRY
from caller_engine.telephony.signature import stream_token, twilio_signature_valid
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, PUBLIC_BASE, Api

Twilio = tuple[TwilioRestEmulator, str]
TO = "+15551234567"
ALL_EVENTS = ["initiated", "ringing", "answered", "completed"]
BASIC_AUTH = {
    "Authorization": "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
}


async def eventually(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    for _ in range(100_000):
        if predicate():
            return
        if loop.time() > deadline:
            break
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met in time")


# -- pure pieces -------------------------------------------------------------------------------


def test_twiml_reader() -> None:
    verbs = parse_twiml(
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        '<Connect action="/next"><Stream url="wss://h/media-stream" name="s1">'
        '<Parameter name="callbackId" value="cb"/><Parameter name="token" value="t"/>'
        '</Stream></Connect><Pause length="2"/><Say>Bye</Say><Play>https://h/a.mp3</Play>'
        "<Record/><Hangup/></Response>"
    )
    assert verbs == [
        ConnectStream(
            "wss://h/media-stream", {"callbackId": "cb", "token": "t"}, "s1", "/next", "POST"
        ),
        Pause(2.0),
        SayVerb("Bye"),
        Play("https://h/a.mp3"),
        Unsupported("Record"),
        Hangup(),
    ]
    for bad in (
        "not xml",
        "<Twiml/>",
        "<Response><Connect><Stream/></Connect></Response>",
        "<Response><Dial/></Response>",
        '<Response><Dial timeout="soon">+15550001111</Dial></Response>',
        "<Response><Gather><Dial>+15550001111</Dial></Gather></Response>",
    ):
        with pytest.raises(TwimlError):
            parse_twiml(bad)


def _call(**form: str | list[str]) -> EmulatedCall:
    from multidict import MultiDict

    items: list[tuple[str, str]] = []
    for key, value in form.items():
        items.extend((key, v) for v in ([value] if isinstance(value, str) else value))
    return EmulatedCall("CA" + "1" * 32, TO, "+15550001111", MultiDict(items))


def test_status_callbacks_only_for_requested_events() -> None:
    assert requested_events(_call()) == {"completed"}
    assert requested_events(_call(StatusCallbackEvent=["ringing", "answered"])) == {
        "ringing",
        "answered",
    }
    assert requested_events(_call(StatusCallbackEvent="initiated completed")) == {
        "initiated",
        "completed",
    }
    params = status_params(_call(), ACCOUNT_SID, "busy", 3, duration=0, sip_response_code=486)
    assert params["CallStatus"] == "busy" and params["SequenceNumber"] == "3"
    assert params["CallDuration"] == "0" and params["SipResponseCode"] == "486"
    assert params["CallbackSource"] == "call-progress-events"
    assert params["Direction"] == "outbound-api" and params["To"] == TO
    assert params["Timestamp"].endswith("+0000")
    assert all(isinstance(v, str) for v in params.values())


def test_rebase_maps_public_urls_like_a_proxy() -> None:
    route = rebase("https://calls.example.com", "http://127.0.0.1:5050")
    assert route("https://calls.example.com/twiml/outbound?callbackId=a%20b") == (
        "http://127.0.0.1:5050/twiml/outbound?callbackId=a%20b"
    )
    assert route("wss://calls.example.com/media-stream") == "ws://127.0.0.1:5050/media-stream"
    assert route("https://elsewhere.example.com/x") == "https://elsewhere.example.com/x"


# -- against the real server -------------------------------------------------------------------


class ModelStub:
    """A model that accepts the realtime session and stays silent; summaries answer at once."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/realtime", self._realtime)
        app.router.add_post("/v1/chat/completions", self._chat)
        return app

    async def _realtime(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                self.events.append(orjson.loads(msg.data))
        return ws

    async def _chat(self, request: web.Request) -> web.Response:
        summary = {
            "intent": "test",
            "outcome": "none",
            "nextAction": "none",
            "scheduledDate": None,
            "sentiment": "neutral",
        }
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": orjson.dumps(summary).decode()},
                }
            ],
        }
        return web.json_response(body)


@dataclass
class World:
    api: Api
    rest: TwilioRestEmulator
    network: PhoneNetwork
    callees: dict[str, Callee] = field(default_factory=dict)

    async def dial(self, callback_id: str, callee: Callee, to: str = TO) -> ActiveEmulatedCall:
        self.callees[to] = callee
        resp = await self.api.initiate({"callbackId": callback_id, "to": to})
        body = await resp.json()
        assert resp.status == 200, body
        return self.network.calls[body["callSid"]]

    async def record(self, callback_id: str) -> Any:
        record = await self.api.services.store.get(callback_id)
        assert record is not None
        return record


WorldFactory = Callable[..., Awaitable[World]]


@pytest.fixture
async def world_factory(
    api_factory: Callable[..., Awaitable[Api]], twilio: Twilio
) -> AsyncIterator[WorldFactory]:
    model_server = LoopbackServer(ModelStub().app())
    await model_server.start()
    networks: list[PhoneNetwork] = []

    async def make(*, settings: dict[str, Any] | None = None, **network: Any) -> World:
        api = await api_factory(
            openai_realtime_url=model_server.ws_url + "/v1/realtime",
            openai_base_url=model_server.url + "/v1",
            **(settings or {}),
        )
        callees: dict[str, Callee] = {}

        async def stored(call: EmulatedCall) -> None:
            """Let the server store the call SID before Twilio reports on the call."""
            if "callbackId=" not in call.url:
                return
            for _ in range(1000):
                if await api.services.store.find_by_sid(call.sid) is not None:
                    return
                await asyncio.sleep(0.002)

        options: dict[str, Any] = {
            "answer_delay": 0.02,
            "ring_delay": 0.005,
            "amd_delay": 0.05,
            "playback_speed": 8.0,
            "no_answer_after": 0.05,
            "route": rebase(PUBLIC_BASE, api.root),
            "before_dial": stored,
            **network,
        }
        phone = PhoneNetwork(
            twilio[0],
            auth_token=AUTH_TOKEN,
            callee_factory=lambda call: callees.get(call.to) or ScriptedCallee(),
            **options,
        )
        networks.append(phone)
        return World(api, twilio[0], phone, callees)

    yield make
    for phone in networks:
        await phone.close()
    await model_server.stop()


async def test_answered_call_then_hang_up_through_rest(world_factory: WorldFactory) -> None:
    world = await world_factory()
    call = await world.dial("cb-1", ScriptedCallee())
    media = await call.wait_stream(5)
    await eventually(lambda: any(w.status for w in call.amd_callbacks))

    # TwiML: fetched with a signed POST, answered with the stream and its parameters
    [twiml] = [w for w in call.webhooks if w.kind == "twiml"]
    assert twiml.status == 200 and twiml.method == "POST"
    assert twiml.url == f"{PUBLIC_BASE}/twiml/outbound?callbackId=cb-1"
    assert twiml.params["CallStatus"] == "in-progress" and twiml.params["CallSid"] == call.sid
    assert twiml.params["Direction"] == "outbound-api" and twiml.params["To"] == TO
    signature = twiml.headers["X-Twilio-Signature"]
    assert twilio_signature_valid(AUTH_TOKEN, twiml.url, twiml.params, signature)
    token = stream_token(world.api.services.settings.stream_secret, call.sid, "cb-1")
    expected = {"callbackId": "cb-1", "token": token}
    assert call.verbs == [ConnectStream("wss://calls.example.com/media-stream", expected)]
    assert call.warnings == [] and call.errors == []

    # the stream: signed over the public wss URL, accepted, `start` carries the parameters
    assert media.signature_url == "wss://calls.example.com/media-stream"
    assert media.ws_url == world.api.root.replace("http", "ws") + "/media-stream"
    assert media.custom_parameters == expected
    await eventually(lambda: not media.closed.is_set() and media.started_at is not None)
    async with asyncio.timeout(5):  # the server read `start` and stored it
        while (await world.record("cb-1")).stream_sid != media.stream_sid:
            await asyncio.sleep(0.01)

    # async AMD
    [amd] = call.amd_callbacks
    assert amd.status == 200 and amd.url == f"{PUBLIC_BASE}/webhooks/amd?callbackId=cb-1{RETRY}"
    assert amd.params["AnsweredBy"] == "human" and amd.params["MachineDetectionDuration"] == "400"
    assert (await world.record("cb-1")).answered_by == "human"

    # the server hangs up through the REST API: `stop` on the stream, then `completed`
    assert await world.api.services.gateway.hangup(call.sid) is True
    await world.network.wait_finished(call.sid, 5)
    assert media.stop_sent_at is not None and media.closed.is_set()
    assert not media.closed_by_server
    assert call.ended_by == "server" and call.status == "completed"
    assert call.statuses_sent == ["initiated", "ringing", "in-progress", "completed"]
    callbacks = call.status_callbacks
    assert all(w.status == 200 for w in callbacks)
    assert [w.params["SequenceNumber"] for w in callbacks] == ["0", "1", "2", "3"]
    assert {w.url for w in callbacks} == {
        f"{PUBLIC_BASE}/webhooks/call-status?callbackId=cb-1{RETRY}"
    }
    final = callbacks[-1].params
    assert final["CallDuration"] == str(call.duration) and final["SipResponseCode"] == "200"
    stored = await world.record("cb-1")
    assert [e.status for e in stored.status_history] == call.statuses_sent
    assert stored.status == "completed" and stored.duration == call.duration
    assert world.rest.calls[call.sid].status == "completed"
    assert await world.api.services.gateway.hangup(call.sid) is False  # gone: 404


@pytest.mark.parametrize(
    ("outcome", "statuses", "sip"),
    [
        ("busy", ["initiated", "busy"], "486"),
        ("no-answer", ["initiated", "ringing", "no-answer"], "487"),
        ("failed", ["initiated", "failed"], "404"),
    ],
)
async def test_calls_that_are_never_answered(
    world_factory: WorldFactory, outcome: Any, statuses: list[str], sip: str
) -> None:
    world = await world_factory()
    call = await world.dial("cb-n", unanswered(outcome))
    await world.network.wait_finished(call.sid, 5)
    assert call.statuses_sent == statuses
    assert all(w.status == 200 for w in call.status_callbacks)
    final = call.status_callbacks[-1].params
    assert final["CallDuration"] == "0" and final["SipResponseCode"] == sip
    assert call.media is None and not [w for w in call.webhooks if w.kind != "status"]
    record = await world.record("cb-n")
    assert record.status == outcome and [e.status for e in record.status_history] == statuses


async def test_answering_machine_is_reported_by_async_amd(world_factory: WorldFactory) -> None:
    world = await world_factory()
    call = await world.dial("cb-m", voicemail())
    await call.wait_stream(5)
    await eventually(lambda: any(w.status for w in call.amd_callbacks))
    [amd] = call.amd_callbacks
    assert amd.status == 200 and amd.params["AnsweredBy"] == "machine_start"
    assert (await world.record("cb-m")).answered_by == "machine_start"
    await world.api.services.gateway.hangup(call.sid)  # unless the server already did
    await world.network.wait_finished(call.sid, 5)
    assert call.statuses_sent[-1] == "completed"
    assert (await world.record("cb-m")).status == "completed"


async def test_callee_hangs_up(world_factory: WorldFactory) -> None:
    world = await world_factory()
    call = await world.dial("cb-h", ScriptedCallee([Say("hello"), HangUp()]))
    await world.network.wait_finished(call.sid, 5)
    media = call.media
    assert media is not None and media.stop_sent_at is not None and not media.closed_by_server
    assert call.ended_by == "callee" and call.callee_error is None
    assert [u.name for u in call.utterances] == ["hello"]
    assert load_clip("hello") in bytes(media.sent_audio)
    assert call.statuses_sent[-1] == "completed"
    assert (await world.record("cb-h")).status == "completed"


async def test_twilio_time_limit_ends_the_call(world_factory: WorldFactory) -> None:
    world = await world_factory(
        settings={"call_time_limit": 10}, playback_speed=40.0, continuous_audio=False
    )
    call = await world.dial("cb-t", ScriptedCallee())
    await world.network.wait_finished(call.sid, 5)
    assert call.ended_by == "time-limit"
    assert call.media is not None and call.media.stop_sent_at is not None
    assert call.duration is not None and call.duration >= 10
    assert (await world.record("cb-t")).status == "completed"


async def test_unknown_call_gets_hangup_twiml(world_factory: WorldFactory, twilio: Twilio) -> None:
    world = await world_factory()
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            f"{twilio[1]}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json",
            data={"To": TO, "From": "+15550001111", "Url": f"{PUBLIC_BASE}/twiml/outbound"},
            headers=BASIC_AUTH,
        )
        sid = (await resp.json())["sid"]
    call = await world.network.wait_finished(sid, 5)
    assert call.verbs == [Hangup()] and call.ended_by == "twiml-hangup"
    assert call.media is None and call.status == "completed"
    assert call.status_callbacks == []  # no StatusCallback was given


async def test_loopback_base_url_without_a_proxy(world_factory: WorldFactory) -> None:
    world = await world_factory(route=None)
    world.api.services.settings.base_url = world.api.root  # Twilio reaches the app directly
    call = await world.dial("cb-l", ScriptedCallee())
    media = await call.wait_stream(5)
    assert (
        media.ws_url
        == media.signature_url
        == world.api.root.replace("http", "ws", 1) + ("/media-stream")
    )
    assert any("wss://" in w for w in call.warnings)
    await world.api.services.gateway.hangup(call.sid)
    await world.network.wait_finished(call.sid, 5)
    assert all(w.status == 200 for w in call.webhooks)
    assert call.statuses_sent == ["initiated", "ringing", "in-progress", "completed"]


# -- against a small voice application ----------------------------------------------------------


def _loud(payload: str) -> bool:
    return any(b != 0xFF for b in base64.b64decode(payload))


class VoiceApp:
    """Greets, answers each caller turn after 5 silent frames, and clears when talked over."""

    def __init__(self) -> None:
        self.url = ""
        self.greeting = b"\x10" * 2400
        self.reply = b"\x20" * 16000
        self.close_after_start = False
        self.after_connect = ""
        self.action = ""
        self.refuse_stream = False
        self.twiml_params: list[dict[str, str]] = []
        self.status: list[dict[str, str]] = []
        self.bad_signatures = 0
        self.clears = 0
        self.echoes: list[str] = []
        self.events: list[str] = []
        self.replies = 0

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1) + "/agent"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/twiml", self._twiml)
        app.router.add_post("/after", self._after)
        app.router.add_post("/status", self._status)
        app.router.add_get("/status", self._status_get)
        app.router.add_get("/agent", self._agent)
        return app

    def _signed(self, request: web.Request, params: dict[str, str]) -> bool:
        signature = request.headers.get("X-Twilio-Signature")
        ok = twilio_signature_valid(AUTH_TOKEN, str(request.url), params, signature)
        self.bad_signatures += not ok
        return ok

    async def _twiml(self, request: web.Request) -> web.Response:
        params = {k: str(v) for k, v in (await request.post()).items()}
        if not self._signed(request, params):
            return web.Response(status=403)
        self.twiml_params.append(params)
        ws = self.ws_url
        action = f' action="{self.url}/after"' if self.action else ""
        body = (
            f'<Response><Connect{action}><Stream url="{ws}"><Parameter name="who" value="me"/>'
            f"</Stream></Connect>{self.after_connect}</Response>"
        )
        return web.Response(text=body, content_type="text/xml")

    async def _after(self, request: web.Request) -> web.Response:
        params = {k: str(v) for k, v in (await request.post()).items()}
        self._signed(request, params)
        return web.Response(text=self.action, content_type="text/xml")

    async def _status_get(self, request: web.Request) -> web.Response:
        """GET callbacks are signed over the URL exactly as requested, query included."""
        signature = request.headers.get("X-Twilio-Signature")
        if not twilio_signature_valid(AUTH_TOKEN, self.url + request.raw_path, {}, signature):
            self.bad_signatures += 1
            return web.Response(status=403)
        self.status.append(dict(request.query))
        return web.Response()

    async def _status(self, request: web.Request) -> web.Response:
        params = {k: str(v) for k, v in (await request.post()).items()}
        if not self._signed(request, params):
            return web.Response(status=403)
        self.status.append(params)
        return web.Response()

    async def _agent(self, request: web.Request) -> web.WebSocketResponse:
        signature = request.headers.get("X-Twilio-Signature")
        if not twilio_signature_valid(AUTH_TOKEN, self.ws_url, {}, signature):
            self.bad_signatures += 1
            raise web.HTTPForbidden()
        if self.refuse_stream:
            raise web.HTTPForbidden()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = ""
        speech = silent = 0
        replying = False

        async def say(audio: bytes, mark: str) -> None:
            payload = base64.b64encode(audio).decode()
            await ws.send_json({"event": "media", "streamSid": sid, "media": {"payload": payload}})
            await ws.send_json({"event": "mark", "streamSid": sid, "mark": {"name": mark}})

        async for msg in ws:
            frame = orjson.loads(msg.data)
            event = frame["event"]
            self.events.append(event)
            if event == "start":
                sid = frame["streamSid"]
                if self.close_after_start:
                    await ws.close()
                    break
                await say(self.greeting, "greeting")
            elif event == "media" and _loud(frame["media"]["payload"]):
                speech, silent = speech + 1, 0
                if replying:
                    await ws.send_json({"event": "clear", "streamSid": sid})
                    self.clears += 1
                    replying = False
            elif event == "media" and speech:
                silent += 1
                if silent == 5:
                    speech = 0
                    self.replies += 1
                    replying = True
                    await say(self.reply, f"reply{self.replies}")
            elif event == "mark":
                self.echoes.append(frame["mark"]["name"])
                replying = False if frame["mark"]["name"].startswith("reply") else replying
            elif event == "stop":
                break
        return ws


@dataclass
class Line:
    app: VoiceApp
    network: PhoneNetwork
    rest_url: str
    callees: list[Callee]

    async def call(self, callee: Callee, **form: str) -> ActiveEmulatedCall:
        self.callees.append(callee)
        async with aiohttp.ClientSession() as session:
            resp = await session.post(
                f"{self.rest_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json",
                data=[
                    ("To", TO),
                    ("From", "+15550001111"),
                    ("Url", self.app.url + "/twiml"),
                    ("StatusCallback", self.app.url + "/status"),
                    *(("StatusCallbackEvent", e) for e in ALL_EVENTS),
                    *form.items(),
                ],
                headers=BASIC_AUTH,
            )
            assert resp.status == 201
            sid: str = (await resp.json())["sid"]
        return self.network.calls[sid]


LineFactory = Callable[..., Awaitable[Line]]


@pytest.fixture
async def line_factory(twilio: Twilio) -> AsyncIterator[LineFactory]:
    servers: list[LoopbackServer] = []
    networks: list[PhoneNetwork] = []

    async def make(**network: Any) -> Line:
        voice = VoiceApp()
        server = LoopbackServer(voice.app())
        voice.url = await server.start()
        servers.append(server)
        callees: list[Callee] = []
        options = {"answer_delay": 0.01, "ring_delay": 0.005, "playback_speed": 8.0, **network}
        phone = PhoneNetwork(
            twilio[0], auth_token=AUTH_TOKEN, callee_factory=lambda _: callees[-1], **options
        )
        networks.append(phone)
        return Line(voice, phone, twilio[1], callees)

    yield make
    for phone in networks:
        await phone.close()
    for server in servers:
        await server.stop()


async def test_scripted_callee_talks_waits_barges_in_and_hangs_up(
    line_factory: LineFactory,
) -> None:
    line = await line_factory()
    callee = ScriptedCallee(
        [
            WaitForAgent(quiet_ms=200, timeout=5),
            Say("hello"),
            WaitForAgent(quiet_ms=200, timeout=5),
            Say("ten_am"),
            BargeIn(after_ms=100, clip="wait_question", timeout=5),
            HangUp(),
        ]
    )
    call = await line.call(callee)
    await line.network.wait_finished(call.sid, 10)
    assert call.errors == [] and call.warnings == [
        f"Stream url {line.app.ws_url} is not wss:// (Twilio requires it)"
    ]
    assert call.callee_error is None and callee.completed_steps == 6
    assert call.ended_by == "callee"
    assert [u.name for u in call.utterances] == ["hello", "ten_am", "wait_question"]
    media = call.media
    assert media is not None
    assert media.custom_parameters == {"who": "me"}
    # the greeting and the first reply played out; the second was cut by the barge-in
    assert [(m.name, m.cleared) for m in media.marks[:3]] == [
        ("greeting", False),
        ("reply1", False),
        ("reply2", True),
    ]
    assert line.app.clears == 1 and line.app.echoes[:3] == ["greeting", "reply1", "reply2"]
    played = bytes(media.played_audio)
    assert played.startswith(line.app.greeting + line.app.reply)
    second = played[len(line.app.greeting + line.app.reply) :]
    assert 800 <= len(second) < len(line.app.reply)  # 100 ms heard before talking over it
    assert second == line.app.reply[: len(second)]
    assert media.cleared_bytes > 0
    # the callee spoke only after its turn came
    assert media.first_audio_at is not None and call.utterances[0].started_at > media.first_audio_at
    assert line.app.events[-1] == "stop"
    assert [s["CallStatus"] for s in line.app.status] == [
        "initiated",
        "ringing",
        "in-progress",
        "completed",
    ]
    assert line.app.bad_signatures == 0


async def test_twiml_after_the_stream_runs_when_the_application_closes_it(
    line_factory: LineFactory,
) -> None:
    line = await line_factory()
    line.app.close_after_start = True
    line.app.after_connect = '<Pause length="1"/><Say>Goodbye</Say>'
    call = await line.call(ScriptedCallee())
    await line.network.wait_finished(call.sid, 5)
    assert call.media is not None and call.media.closed_by_server
    assert call.media.stop_sent_at is None
    assert call.ended_by == "twiml-end" and call.status == "completed"
    assert call.verbs[1:] == [Pause(1.0), SayVerb("Goodbye")]


async def test_connect_action_replaces_the_rest_of_the_document(
    line_factory: LineFactory,
) -> None:
    line = await line_factory()
    line.app.close_after_start = True
    line.app.action = "<Response><Hangup/></Response>"
    line.app.after_connect = "<Say>never said</Say>"
    call = await line.call(ScriptedCallee())
    await line.network.wait_finished(call.sid, 5)
    assert call.ended_by == "twiml-hangup"
    assert [w.url for w in call.webhooks if w.kind == "twiml"] == [
        line.app.url + "/twiml",
        line.app.url + "/after",
    ]
    assert line.app.bad_signatures == 0


async def test_a_callee_that_gives_up_hangs_up(line_factory: LineFactory) -> None:
    line = await line_factory()
    line.app.greeting = b""  # the agent never speaks
    call = await line.call(ScriptedCallee([WaitForAgent(timeout=0.2)]))
    await line.network.wait_finished(call.sid, 5)
    assert isinstance(call.callee_error, TimeoutError)
    assert call.ended_by == "callee"


async def test_network_time_limit_override(line_factory: LineFactory) -> None:
    line = await line_factory(time_limit=0.2, continuous_audio=False)
    call = await line.call(ScriptedCallee())
    await line.network.wait_finished(call.sid, 5)
    assert call.ended_by == "time-limit"
    assert call.duration is not None and call.duration >= 1  # 0.2 s at speed 8
    assert line.app.events[-1] == "stop"


async def test_server_hang_up_while_ringing_cancels_the_call(line_factory: LineFactory) -> None:
    line = await line_factory(answer_delay=30.0)
    call = await line.call(ScriptedCallee())
    await eventually(lambda: call.statuses_sent == ["initiated", "ringing"])
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            f"{line.rest_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{call.sid}.json",
            data={"Status": "completed"},
            headers=BASIC_AUTH,
        )
        assert resp.status == 200
    await line.network.wait_finished(call.sid, 5)
    assert call.statuses_sent == ["initiated", "ringing", "canceled"]
    assert call.ended_by == "server" and call.answered_at is None
    assert [w.kind for w in call.webhooks] == ["status"] * 3
    assert call.status_callbacks[-1].params["CallDuration"] == "0"


async def test_synchronous_amd_and_get_callbacks(line_factory: LineFactory) -> None:
    line = await line_factory(amd_delay=0.02)
    call = await line.call(
        ScriptedCallee([HangUp()]), MachineDetection="Enable", StatusCallbackMethod="GET"
    )
    await line.network.wait_finished(call.sid, 5)
    [params] = line.app.twiml_params
    assert params["AnsweredBy"] == "human" and params["MachineDetectionDuration"] == "160"
    assert call.amd_callbacks == []  # synchronous detection answers in the TwiML request
    assert [s["CallStatus"] for s in line.app.status] == [
        "initiated",
        "ringing",
        "in-progress",
        "completed",
    ]
    assert all(w.method == "GET" and w.status == 200 for w in call.status_callbacks)
    assert line.app.bad_signatures == 0


async def test_refused_stream_moves_on_to_the_next_verb(line_factory: LineFactory) -> None:
    line = await line_factory()
    line.app.refuse_stream = True
    call = await line.call(ScriptedCallee())
    await line.network.wait_finished(call.sid, 5)
    assert call.ended_by == "twiml-end" and not call.stream_started.is_set()
    assert len(call.errors) == 1 and "403" in call.errors[0]
