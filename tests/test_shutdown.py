"""SIGTERM drains: the real server process, with a call in progress."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from caller_engine.sim.openai.chat import ChatCompletionsEmulator
from caller_engine.sim.openai.realtime import RealtimeEmulator, RealtimeScript, ScriptedResponse
from caller_engine.sim.server import LoopbackServer
from caller_engine.sim.twilio.media import TwilioMediaClient
from caller_engine.sim.twilio.rest import TwilioRestEmulator
from tests.bridge_env import fetch_twiml, free_port
from tests.conftest import ACCOUNT_SID, API_KEY, AUTH_TOKEN

GREETING = b"\x11" * 1600


@asynccontextmanager
async def server_process(tmp_path: Path, **env: str) -> AsyncIterator[dict[str, Any]]:
    rest = TwilioRestEmulator(ACCOUNT_SID, AUTH_TOKEN)
    model = RealtimeEmulator(
        script_factory=lambda: RealtimeScript([ScriptedResponse(text="Hi.", audio=GREETING)])
    )
    chat = ChatCompletionsEmulator()
    servers = [LoopbackServer(rest.app()), LoopbackServer(model.app()), LoopbackServer(chat.app())]
    for server in servers:
        await server.start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    environ = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "BASE_URL": base,
        "API_KEY": API_KEY,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_PHONE_NUMBER": "+15550001111",
        "TWILIO_API_BASE_URL": servers[0].url,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_REALTIME_URL": servers[1].ws_url + "/v1/realtime",
        "OPENAI_BASE_URL": servers[2].url + "/v1",
        "DATABASE_URL": f"sqlite:///{tmp_path}/calls.db",
        # A server process reads the real clock: let it call at any hour.
        "CALLING_HOURS": "00:00-24:00",
        **env,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "caller_engine",
        "serve",
        env=environ,
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    http = aiohttp.ClientSession()
    try:
        async with asyncio.timeout(20):
            while True:
                try:
                    async with http.get(base + "/health") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
        yield {"proc": proc, "base": base, "http": http, "rest": rest, "model": model}
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await http.close()
        for server in servers:
            await server.stop()


async def _open_call(ctx: dict[str, Any], callback_id: str) -> TwilioMediaClient:
    http: aiohttp.ClientSession = ctx["http"]
    base: str = ctx["base"]
    resp = await http.post(
        base + "/call/initiate",
        json={"callbackId": callback_id, "to": "+15551230000"},
        headers={"X-API-Key": API_KEY},
    )
    call_sid = (await resp.json())["callSid"]
    url, params = await fetch_twiml(http, base, callback_id, call_sid)
    client = TwilioMediaClient(
        url,
        auth_token=AUTH_TOKEN,
        call_sid=call_sid,
        account_sid=ACCOUNT_SID,
        custom_parameters=params,
        playback_speed=4.0,
        session=http,
    )
    await client.connect()
    await client.wait_until(lambda: len(client.received_audio) >= len(GREETING), 10)
    return client


async def test_sigterm_drains_active_calls_then_exits_zero(tmp_path: Path) -> None:
    async with server_process(tmp_path) as ctx:
        client = await _open_call(ctx, "cb-drain")
        proc = ctx["proc"]
        proc.send_signal(signal.SIGTERM)
        http: aiohttp.ClientSession = ctx["http"]
        async with asyncio.timeout(5):
            while True:
                async with http.get(ctx["base"] + "/health") as resp:
                    if resp.status == 503:
                        assert (await resp.json())["activeCalls"] == 1
                        break
                await asyncio.sleep(0.02)
        refused = await http.post(
            ctx["base"] + "/call/initiate",
            json={"callbackId": "cb-new", "to": "+15551230000"},
            headers={"X-API-Key": API_KEY},
        )
        assert refused.status == 503
        # the active call still works
        model: RealtimeEmulator = ctx["model"]
        session = model.sessions[0]
        before = len(session.input_audio)
        await client.send_silence(200, paced=False)
        async with asyncio.timeout(5):
            while len(session.input_audio) < before + 1600:
                await asyncio.sleep(0.02)
        assert proc.returncode is None
        await client.stop()
        assert await asyncio.wait_for(proc.wait(), 15) == 0


async def test_drain_limit_hangs_up_remaining_calls(tmp_path: Path) -> None:
    async with server_process(tmp_path, DRAIN_TIMEOUT="0.5") as ctx:
        client = await _open_call(ctx, "cb-late")
        ctx["proc"].send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(ctx["proc"].wait(), 15) == 0
        rest: TwilioRestEmulator = ctx["rest"]
        assert rest.calls[client.call_sid].status == "completed"
        await client.close()
