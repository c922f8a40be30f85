"""The ElevenLabs emulator, driven by a plain `websockets` client speaking the wire protocol."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from caller_engine.audio import mulaw
from caller_engine.sim.elevenlabs import ElevenLabsEmulator
from caller_engine.sim.elevenlabs.agent import EmulatedAgent
from caller_engine.sim.openai.realtime.script import RealtimeScript, ScriptedResponse
from caller_engine.sim.server import LoopbackServer

KEY = "xi-test-key"
LOUD = mulaw.tone(20, 300, 9000)
QUIET = mulaw.silence(20)


class Env:
    def __init__(self, emulator: ElevenLabsEmulator, server: LoopbackServer) -> None:
        self.emulator = emulator
        self.server = server

    def ws_url(self, agent_id: str = "agent_a", **query: str) -> str:
        extra = "".join(f"&{k}={v}" for k, v in query.items())
        return f"{self.server.ws_url}/v1/convai/conversation?agent_id={agent_id}{extra}"


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    emulator = ElevenLabsEmulator(
        api_key=KEY,
        script_factory=lambda: RealtimeScript(
            responses=[
                ScriptedResponse(text="Hello there, this is the agent speaking.", audio_ms=3000),
                ScriptedResponse(text="Sure, happy to help.", audio_ms=600),
            ],
            user_transcripts=["I have a question"],
        ),
        ping_interval=0.05,
        silence_ms=100,
    )
    emulator.add_agent("agent_a")
    server = LoopbackServer(emulator.app())
    await server.start()
    yield Env(emulator, server)
    await server.stop()


class Peer:
    """A client that reads every server frame into `seen`."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def send(self, msg: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(msg).decode())

    async def next(self, kind: str, within: float = 3.0) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while True:
                msg = orjson.loads(await self.ws.recv())
                self.seen.append(msg)
                if msg["type"] == kind:
                    return msg

    async def until_closed(self, within: float = 3.0) -> int:
        try:
            async with asyncio.timeout(within):
                async for raw in self.ws:
                    self.seen.append(orjson.loads(raw))
        except ConnectionClosed:
            pass
        assert self.ws.close_code is not None
        return self.ws.close_code

    async def audio(self, chunk: bytes) -> None:
        await self.send({"user_audio_chunk": base64.b64encode(chunk).decode()})


async def open_peer(url: str, init: dict[str, Any] | None = None) -> Peer:
    ws = await connect(url, max_size=16 * 1024 * 1024, compression=None)  # as our client
    peer = Peer(ws)
    with contextlib.suppress(ConnectionClosed):  # a refused connection closes at once
        await peer.send(init or {"type": "conversation_initiation_client_data"})
    return peer


async def test_metadata_first_then_greeting_with_shared_id(env: Env) -> None:
    peer = await open_peer(env.ws_url())
    first = orjson.loads(await peer.ws.recv())
    assert first["type"] == "conversation_initiation_metadata"
    meta = first["conversation_initiation_metadata_event"]
    assert meta["agent_output_audio_format"] == "ulaw_8000"
    assert meta["user_input_audio_format"] == "ulaw_8000"
    text = await peer.next("agent_response")
    audio = await peer.next("audio")
    assert text["agent_response_event"]["event_id"] == audio["audio_event"]["event_id"]
    assert text["agent_response_event"]["agent_response"].startswith("Hello there")
    chunk = base64.b64decode(audio["audio_event"]["audio_base_64"])
    assert 250 * 8 <= len(chunk) <= 2500 * 8  # bursty: 0.25-2.5 s per frame
    await peer.ws.close()


async def test_pings_are_answered_with_their_event_id(env: Env) -> None:
    peer = await open_peer(env.ws_url())
    ping = await peer.next("ping")
    event_id = ping["ping_event"]["event_id"]
    await peer.send({"type": "pong", "event_id": event_id})
    await peer.send({"type": "pong", "event_id": 12345})  # no such ping
    conversation = await env.emulator.wait_for_conversation()
    await peer.next("ping")
    assert event_id in conversation.pongs
    assert conversation.violations == ["pong for unknown ping 12345"]
    await peer.ws.close()


@pytest.mark.parametrize(
    "message",
    [
        {"type": "ping"},
        {"type": "truncate", "event_id": 1},
        {"type": "pong", "pong_event": {"event_id": 1}},
        {"type": "client_tool_result", "tool_call_id": "x", "result": {"ok": True}},
    ],
)
async def test_refused_messages_close_1008(env: Env, message: dict[str, Any]) -> None:
    peer = await open_peer(env.ws_url())
    await peer.next("conversation_initiation_metadata")
    await peer.send(message)
    assert await peer.until_closed() == 1008
    errors = [m for m in peer.seen if m["type"] == "error"]
    assert errors and errors[-1]["error_event"]["code"] == 1008


async def test_non_json_closes_1008(env: Env) -> None:
    peer = await open_peer(env.ws_url())
    await peer.next("conversation_initiation_metadata")
    await peer.ws.send("not json")
    assert await peer.until_closed() == 1008


async def test_disabled_override_is_refused_with_override_error(env: Env) -> None:
    init = {
        "type": "conversation_initiation_client_data",
        "conversation_config_override": {"agent": {"prompt": {"prompt": "Be brief."}}},
    }
    peer = await open_peer(env.ws_url(), init)
    assert await peer.until_closed() == 1008
    (error,) = [m for m in peer.seen if m["type"] == "error"]
    assert error["error_event"]["error_type"] == "override_error"
    assert "agent.prompt.prompt" in error["error_event"]["message"]


async def test_allowed_overrides_and_dynamic_variables(env: Env) -> None:
    agent = env.emulator.agents["agent_a"]
    agent.allow_overrides("agent.first_message", "tts.voice_id")
    agent.prompt = "You call {{user_name}}."
    init = {
        "type": "conversation_initiation_client_data",
        "conversation_config_override": {
            "agent": {"first_message": "Hi {{user_name}}!"},
            "tts": {"voice_id": "v1"},
        },
        "dynamic_variables": {"user_name": "John", "vip": True},
    }
    peer = await open_peer(env.ws_url(), init)
    text = await peer.next("agent_response")
    assert text["agent_response_event"]["agent_response"] == "Hi John!"
    await peer.ws.close()


async def test_missing_dynamic_variable_closes_1008(env: Env) -> None:
    env.emulator.agents["agent_a"].prompt = "You call {{user_name}}."
    peer = await open_peer(env.ws_url())
    assert await peer.until_closed() == 1008
    (error,) = [m for m in peer.seen if m["type"] == "error"]
    assert error["error_event"]["error_type"] == "missing_dynamic_variable"


async def test_init_is_checked_against_the_published_type(env: Env) -> None:
    env.emulator.agents["agent_a"].allow_overrides("agent.first_message")
    init = {
        "type": "conversation_initiation_client_data",
        "conversation_config_override": {"agent": {"first_message": ["not", "a", "string"]}},
    }
    peer = await open_peer(env.ws_url(), init)
    assert await peer.until_closed() == 1008


async def test_client_events_filter(env: Env) -> None:
    env.emulator.agents["agent_a"].client_events = ["audio", "interruption"]
    peer = await open_peer(env.ws_url())
    await peer.next("audio")
    await asyncio.sleep(0.15)  # pings would have come by now
    await peer.ws.close()
    async for raw in peer.ws:
        peer.seen.append(orjson.loads(raw))
    assert {m["type"] for m in peer.seen} == {"audio"}


async def talk(peer: Peer, frames: int, chunk: bytes) -> None:
    for _ in range(frames):
        await peer.audio(chunk)


async def test_interruption_stale_chunks_correction_and_equal_id_reply(env: Env) -> None:
    agent = env.emulator.agents["agent_a"]
    agent.client_events = [*agent.client_events, "agent_response_correction"]
    peer = await open_peer(env.ws_url())
    greeting = await peer.next("audio")
    greeting_id = greeting["audio_event"]["event_id"]
    await talk(peer, 10, LOUD)  # barge in while the 3 s greeting is audible
    interruption = await peer.next("interruption")
    floor = interruption["interruption_event"]["event_id"]
    assert floor > greeting_id
    correction = await peer.next("agent_response_correction")
    stale = [m for m in peer.seen[peer.seen.index(interruption) :] if m["type"] == "audio"]
    assert len(stale) == 2 and all(m["audio_event"]["event_id"] == greeting_id for m in stale)
    corrected = correction["agent_response_correction_event"]
    assert corrected["event_id"] == greeting_id
    assert corrected["original_agent_response"].startswith(corrected["corrected_agent_response"])
    assert len(corrected["corrected_agent_response"]) < len(corrected["original_agent_response"])
    await talk(peer, 10, QUIET)
    transcript = await peer.next("user_transcript")
    assert transcript["user_transcription_event"] == {
        "user_transcript": "I have a question",
        "event_id": floor,
    }
    reply = await peer.next("audio")
    assert reply["audio_event"]["event_id"] == floor  # equal id: must not be dropped
    await peer.ws.close()


async def test_client_tool_call_waits_for_its_result(env: Env) -> None:
    emulator = env.emulator
    emulator.script_factory = lambda: RealtimeScript(
        responses=[
            ScriptedResponse(text="", tool_calls=[("lookup", {"q": "x"})]),
            ScriptedResponse(text="Found it.", audio_ms=300),
        ]
    )
    emulator.define_client_tools(
        emulator.agents["agent_a"],
        [{"type": "client", "name": "lookup", "description": "Look up", "expects_response": True}],
    )
    peer = await open_peer(env.ws_url())
    call = (await peer.next("client_tool_call"))["client_tool_call"]
    assert call["tool_name"] == "lookup" and call["parameters"] == {"q": "x"}
    await peer.send(
        {
            "type": "client_tool_result",
            "tool_call_id": call["tool_call_id"],
            "result": '{"ok": true}',
            "is_error": False,
        }
    )
    text = await peer.next("agent_response")
    assert text["agent_response_event"] == {
        "agent_response": "Found it.",
        "event_id": call["event_id"],
    }
    conversation = emulator.conversations[0]
    assert conversation.tool_calls[0].result is not None
    assert conversation.violations == []
    await peer.ws.close()


async def test_undefined_client_tool_is_a_violation(env: Env) -> None:
    env.emulator.script_factory = lambda: RealtimeScript(
        responses=[ScriptedResponse(text="", tool_calls=[("nope", {})])]
    )
    peer = await open_peer(env.ws_url())
    await peer.next("conversation_initiation_metadata")
    conversation = await env.emulator.wait_for_conversation()
    async with asyncio.timeout(2):
        while not conversation.violations:
            await asyncio.sleep(0.01)
    assert conversation.violations == ["the agent has no client tool 'nope'"]
    await peer.ws.close()


async def test_end_call_closes_1000_after_its_audio(env: Env) -> None:
    env.emulator.script_factory = lambda: RealtimeScript(
        responses=[ScriptedResponse(text="Bye!", audio_ms=500, tool_calls=[("end_call", {})])]
    )
    agent = env.emulator.agents["agent_a"]
    agent.client_events = [*agent.client_events, "agent_tool_response"]
    peer = await open_peer(env.ws_url())
    assert await peer.until_closed() == 1000
    kinds = [m["type"] for m in peer.seen]
    assert kinds.index("agent_tool_response") > max(i for i, k in enumerate(kinds) if k == "audio")
    audio = b"".join(
        base64.b64decode(m["audio_event"]["audio_base_64"])
        for m in peer.seen
        if m["type"] == "audio"
    )
    assert len(audio) == 500 * 8


async def test_quota_error_then_1002(env: Env) -> None:
    env.emulator.quota_exhausted = True
    peer = await open_peer(env.ws_url())
    assert await peer.until_closed() == 1002
    assert peer.seen[0]["type"] == "error" and "quota" in peer.seen[0]["message"]


async def test_drop_sends_error_then_closes(env: Env) -> None:
    peer = await open_peer(env.ws_url())
    await peer.next("conversation_initiation_metadata")
    conversation = await env.emulator.wait_for_conversation()
    await conversation.drop(1011)
    assert await peer.until_closed() == 1011


async def test_pcm_formats_are_reported_and_used(env: Env) -> None:
    agent = env.emulator.agents["agent_a"]
    agent.output_format = "pcm_16000"
    agent.input_format = "pcm_16000"
    peer = await open_peer(env.ws_url())
    meta = (await peer.next("conversation_initiation_metadata"))[
        "conversation_initiation_metadata_event"
    ]
    assert meta["agent_output_audio_format"] == "pcm_16000"
    audio = await peer.next("audio")
    assert len(base64.b64decode(audio["audio_event"]["audio_base_64"])) % 2 == 0
    await peer.ws.close()


# -- REST ---------------------------------------------------------------------------------


async def rest(
    env: Env, method: str, path: str, body: Any = None, key: str = KEY
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method,
            f"{env.server.url}{path}",
            headers={"xi-api-key": key},
            data=orjson.dumps(body) if body is not None else None,
        ) as response,
    ):
        return response.status, orjson.loads(await response.read())


async def test_signed_url_for_a_private_agent(env: Env) -> None:
    agent: EmulatedAgent = env.emulator.add_agent("agent_p", enable_auth=True)
    assert agent.enable_auth
    status, _ = await rest(
        env, "GET", "/v1/convai/conversation/get-signed-url?agent_id=agent_p", key="bad"
    )
    assert status == 401
    status, _ = await rest(env, "GET", "/v1/convai/conversation/get-signed-url")
    assert status == 422
    status, _ = await rest(env, "GET", "/v1/convai/conversation/get-signed-url?agent_id=nope")
    assert status == 404
    unsigned = await open_peer(env.ws_url("agent_p"))
    assert await unsigned.until_closed() == 1008
    status, body = await rest(env, "GET", "/v1/convai/conversation/get-signed-url?agent_id=agent_p")
    assert status == 200 and "conversation_signature=" in body["signed_url"]
    peer = await open_peer(body["signed_url"])
    await peer.next("conversation_initiation_metadata")
    await peer.ws.close()


async def test_signed_url_expires_for_new_conversations(env: Env) -> None:
    now = [1000.0]
    env.emulator.clock = lambda: now[0]
    env.emulator.add_agent("agent_p", enable_auth=True)
    _, body = await rest(env, "GET", "/v1/convai/conversation/get-signed-url?agent_id=agent_p")
    open_one = await open_peer(body["signed_url"])
    await open_one.next("conversation_initiation_metadata")
    now[0] += 15 * 60 + 1
    late = await open_peer(body["signed_url"])
    assert await late.until_closed() == 1008
    await open_one.next("ping")  # expiry does not close a conversation already open
    await open_one.ws.close()


async def test_tools_are_validated_created_updated_and_attached(env: Env) -> None:
    bad = {
        "tool_config": {
            "type": "client",
            "name": "t",
            "description": "d",
            "parameters": {"type": "object", "properties": {"a": {"type": "string"}}},
        }
    }
    status, body = await rest(env, "POST", "/v1/convai/tools", bad)
    assert status == 422 and "exactly one of description" in str(body)
    good = {
        "tool_config": {
            "type": "client",
            "name": "t",
            "description": "d",
            "parameters": {
                "type": "object",
                "required": ["a"],
                "properties": {"a": {"type": "string", "description": "A"}},
            },
        }
    }
    status, created = await rest(env, "POST", "/v1/convai/tools", good)
    assert status == 200
    tool_id = created["id"]
    good["tool_config"]["description"] = "changed"
    status, _ = await rest(env, "PATCH", f"/v1/convai/tools/{tool_id}", good)
    assert status == 200
    status, listed = await rest(env, "GET", "/v1/convai/tools?types=client")
    assert [t["tool_config"]["description"] for t in listed["tools"]] == ["changed"]
    patch = {"conversation_config": {"agent": {"prompt": {"tool_ids": [tool_id]}}}}
    status, agent = await rest(env, "PATCH", "/v1/convai/agents/agent_a", patch)
    assert agent["conversation_config"]["agent"]["prompt"]["tool_ids"] == [tool_id]
    assert env.emulator.client_tool(env.emulator.agents["agent_a"], "t") is not None
