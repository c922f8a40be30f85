"""A real server wired to the emulators, for end-to-end tests of the media bridge."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from caller_engine.calls.result import CallResult
from caller_engine.sim.openai.chat import ChatCompletionsEmulator
from caller_engine.sim.openai.realtime import RealtimeEmulator, RealtimeScript
from caller_engine.sim.server import LoopbackServer
from caller_engine.sim.twilio.media import TwilioMediaClient
from caller_engine.sim.twilio.rest import EmulatedCall, TwilioRestEmulator
from caller_engine.telephony.signature import sign_twilio_request
from caller_engine.web.app import create_app
from caller_engine.web.state import SERVICES, Services
from tests.conftest import ACCOUNT_SID, API_KEY, AUTH_TOKEN, daytime, make_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def fetch_twiml(
    http: aiohttp.ClientSession, base: str, callback_id: str, call_sid: str
) -> tuple[str, dict[str, str]]:
    """Fetch the TwiML as Twilio does (signed POST); the Stream url and its parameters."""
    url = f"{base}/twiml/outbound?callbackId={callback_id}"
    params = {"CallSid": call_sid, "AccountSid": ACCOUNT_SID, "CallStatus": "in-progress"}
    headers = {"X-Twilio-Signature": sign_twilio_request(AUTH_TOKEN, url, params)}
    resp = await http.post(url, data=params, headers=headers)
    assert resp.status == 200
    stream = ET.fromstring(await resp.text()).find("Connect/Stream")
    assert stream is not None
    parameters = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return stream.get("url", ""), parameters


class ResultCollector:
    def __init__(self) -> None:
        self.results: list[CallResult] = []

    async def publish(self, result: CallResult) -> None:
        self.results.append(result)


@dataclass
class BridgeEnv:
    app: web.Application
    base: str
    rest: TwilioRestEmulator
    model: RealtimeEmulator
    chat: ChatCompletionsEmulator
    http: aiohttp.ClientSession
    results: ResultCollector
    clients: list[TwilioMediaClient] = field(default_factory=list)
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def services(self) -> Services:
        return self.app[SERVICES]

    async def initiate(self, callback_id: str, **body: Any) -> str:
        payload = {"callbackId": callback_id, "to": "+15551230000", **body}
        resp = await self.http.post(
            self.base + "/call/initiate", json=payload, headers={"X-API-Key": API_KEY}
        )
        data = await resp.json()
        assert resp.status == 200, data
        return str(data["callSid"])

    async def fetch_twiml(self, callback_id: str, call_sid: str) -> tuple[str, dict[str, str]]:
        return await fetch_twiml(self.http, self.base, callback_id, call_sid)

    async def call(
        self, callback_id: str = "cb-1", *, speed: float = 4.0, **body: Any
    ) -> TwilioMediaClient:
        """Initiate, fetch TwiML like Twilio, and open the media stream."""
        call_sid = await self.initiate(callback_id, **body)
        url, params = await self.fetch_twiml(callback_id, call_sid)
        return await self.open_stream(call_sid, url, params, speed=speed)

    async def open_stream(
        self, call_sid: str, url: str, params: dict[str, str], *, speed: float = 4.0
    ) -> TwilioMediaClient:
        """Open the media stream as Twilio does after the TwiML."""
        client = TwilioMediaClient(
            url,
            auth_token=AUTH_TOKEN,
            call_sid=call_sid,
            account_sid=ACCOUNT_SID,
            custom_parameters=params,
            playback_speed=speed,
            session=self.http,
        )
        await client.connect()
        self.clients.append(client)
        return client

    def stop_stream_on_hangup(self) -> None:
        """Like Twilio: a REST hang-up ends the call's media stream with `stop`."""

        def on_update(call: EmulatedCall) -> None:
            # After the REST answer, as Twilio does: never inside the request.
            for client in self.clients:
                if client.call_sid == call.sid:
                    task = asyncio.get_running_loop().create_task(client.stop())
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)

        self.rest.on_call_updated.append(on_update)

    async def result(self, callback_id: str, within: float = 10.0) -> CallResult:
        async with asyncio.timeout(within):
            while True:
                for result in self.results.results:
                    if result.callbackId == callback_id:
                        return result
                await asyncio.sleep(0.02)


@asynccontextmanager
async def bridge_env(
    script: Callable[[], RealtimeScript] | None = None,
    *,
    model_kwargs: dict[str, Any] | None = None,
    **settings: Any,
) -> AsyncIterator[BridgeEnv]:
    rest = TwilioRestEmulator(ACCOUNT_SID, AUTH_TOKEN)
    rest_server = LoopbackServer(rest.app())
    model = RealtimeEmulator(script_factory=script, **(model_kwargs or {}))
    model_server = LoopbackServer(model.app())
    chat = ChatCompletionsEmulator()
    chat_server = LoopbackServer(chat.app())
    await rest_server.start()
    await model_server.start()
    await chat_server.start()
    db_dir = tempfile.mkdtemp(prefix="caller-engine-test-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    values: dict[str, Any] = {
        "base_url": base,
        "twilio_api_base_url": rest_server.url,
        "openai_realtime_url": model_server.ws_url + "/v1/realtime",
        "openai_base_url": chat_server.url + "/v1",
        "database_url": f"sqlite:///{db_dir}/calls.db",
    }
    values.update(settings)
    app = create_app(make_settings(**values), clock=daytime)
    app_server = LoopbackServer(app)
    await app_server.start(port)
    results = ResultCollector()
    app[SERVICES].calls.add_sink(results)
    http = aiohttp.ClientSession()
    env = BridgeEnv(app, base, rest, model, chat, http, results)
    try:
        yield env
    finally:
        for client in env.clients:
            await client.close()
        await app_server.stop()
        await http.close()
        await model_server.stop()
        await chat_server.stop()
        await rest_server.stop()
        shutil.rmtree(db_dir, ignore_errors=True)
