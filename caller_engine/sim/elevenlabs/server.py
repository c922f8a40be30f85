"""The emulated ElevenLabs API: the conversation WebSocket and the REST calls we make.

REST (every call needs `xi-api-key`):
- `GET /v1/convai/conversation/get-signed-url?agent_id=` →
  `{"signed_url": "ws…&conversation_signature=…"}`, valid for starting a conversation within
  `signed_url_ttl` (15 min); 401 bad key, 404 unknown agent, 422 no agent id.
- `GET|POST /v1/convai/tools`, `PATCH /v1/convai/tools/{id}`: workspace tools, validated
  (`tools.check_tool_request`).
- `GET|PATCH /v1/convai/agents/{id}`: the agent, with `conversation_config.agent.prompt.tool_ids`.

WebSocket `GET /v1/convai/conversation?agent_id=` (plus `conversation_signature=` or the legacy
`token=`): a private agent without a valid, unexpired signature, or an unknown agent, is closed
with 1008 after the upgrade.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from caller_engine.sim.elevenlabs import validation
from caller_engine.sim.elevenlabs.agent import EmulatedAgent
from caller_engine.sim.elevenlabs.conversation import EmulatedConversation
from caller_engine.sim.elevenlabs.tools import check_tool_request
from caller_engine.sim.openai.realtime.script import RealtimeScript

SIGNED_URL_TTL = 15 * 60.0
DEFAULT_VAD_THRESHOLD = 400.0
InputAudioHook = Callable[[EmulatedConversation, bytes, float], None]
EventHook = Callable[[EmulatedConversation, dict[str, Any], float], None]


def truncate_words(text: str, fraction: float) -> str:
    """The default correction: the words heard by the service's clock."""
    words = text.split()
    keep = max(0, min(len(words), round(len(words) * fraction)))
    return " ".join(words[:keep])


@dataclass
class Signature:
    agent_id: str
    issued: float
    single_use: bool
    used: bool = False


class ElevenLabsEmulator:
    """Serves emulated agents. Knobs: `chunk_ms` (range of audio per chunk, ms),
    `chunk_interval` (s between chunks; 0 = as fast as the loop allows), `stale_chunks`
    (old-id chunks after an interruption), `equal_id_reply`, `text_first` (agent text before or
    after its first audio chunk), `ping_interval`, `input_timeout`, `quota_exhausted`,
    `correction` (original text, heard fraction) → corrected text, `clock` (signed URL expiry)."""

    def __init__(
        self,
        *,
        api_key: str = "xi-test-key",
        script_factory: Callable[[], RealtimeScript] | None = None,
        chunk_ms: tuple[int, int] = (250, 2500),
        chunk_interval: float = 0.0,
        stale_chunks: int = 2,
        equal_id_reply: bool = True,
        text_first: bool = True,
        ping_interval: float = 2.0,
        input_timeout: float = 60.0,
        vad_energy_threshold: float = DEFAULT_VAD_THRESHOLD,
        silence_ms: int = 500,
        seed: int = 7,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api_key = api_key
        self.script_factory = script_factory
        self.chunk_ms = chunk_ms
        self.chunk_interval = chunk_interval
        self.stale_chunks = stale_chunks
        self.equal_id_reply = equal_id_reply
        self.text_first = text_first
        self.ping_interval = ping_interval
        self.ping_id_start = 900_001
        self.input_timeout = input_timeout
        self.vad_energy_threshold = vad_energy_threshold
        self.silence_ms = silence_ms
        self.seed = seed
        self.clock = clock
        self.signed_url_ttl = SIGNED_URL_TTL
        self.quota_exhausted = False
        self.reject_connections = 0  # the next N upgrades get HTTP 503 (an outage)
        # The first message's words come from the script's first line rather than the configured
        # first message (shared conformance scripts decide what every provider's model says).
        self.speak_script_first_line = False
        # The service deems its audio audible for its duration from when it was sent; tests that
        # play the caller's side faster than real time scale that clock the same way.
        self.audible_speed = 1.0
        self.correction: Callable[[str, float], str] = truncate_words
        self.agents: dict[str, EmulatedAgent] = {}
        self.tools: dict[str, dict[str, Any]] = {}  # id → tool response
        self.signatures: dict[str, Signature] = {}
        self.conversations: list[EmulatedConversation] = []
        self.connection_attempts = 0
        self.rest_requests: list[tuple[str, str]] = []
        self.on_input_audio: InputAudioHook | None = None
        self.on_server_event: EventHook | None = None
        self.on_client_event: EventHook | None = None
        self._serial = 0
        self._added = asyncio.Event()
        validation.load_published_types()  # import them now, not inside the first conversation

    def next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def add_agent(self, agent_id: str = "agent_emulated", **settings: Any) -> EmulatedAgent:
        agent = EmulatedAgent(agent_id, **settings)
        self.agents[agent_id] = agent
        return agent

    def define_client_tools(self, agent: EmulatedAgent, configs: list[dict[str, Any]]) -> None:
        """Put client tools on an agent directly (what `elevenlabs tools --apply` does)."""
        for config in configs:
            tool_id = self._store_tool(config)
            agent.tool_ids.append(tool_id)

    def client_tool(self, agent: EmulatedAgent, name: str) -> dict[str, Any] | None:
        for tool_id in agent.tool_ids:
            config = self.tools.get(tool_id, {}).get("tool_config", {})
            if config.get("type") == "client" and config.get("name") == name:
                return dict(config)
        return None

    @property
    def violations(self) -> list[str]:
        return [v for c in self.conversations for v in c.violations]

    async def wait_for_conversation(
        self, index: int = 0, within: float = 5.0
    ) -> EmulatedConversation:
        async with asyncio.timeout(within):
            while len(self.conversations) <= index:
                signal = self._added
                await signal.wait()
        return self.conversations[index]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/convai/conversation", self._conversation)
        app.router.add_get("/v1/convai/conversation/get-signed-url", self._signed_url)
        app.router.add_get("/v1/convai/tools", self._list_tools)
        app.router.add_post("/v1/convai/tools", self._create_tool)
        app.router.add_patch("/v1/convai/tools/{tool_id}", self._update_tool)
        app.router.add_get("/v1/convai/agents/{agent_id}", self._get_agent)
        app.router.add_patch("/v1/convai/agents/{agent_id}", self._update_agent)
        app.on_shutdown.append(self._close_all)
        return app

    async def _close_all(self, _app: web.Application) -> None:
        await asyncio.gather(*(c.close(1001) for c in self.conversations if not c.closed.is_set()))

    # -- WebSocket ---------------------------------------------------------------------

    async def _conversation(self, request: web.Request) -> web.StreamResponse:
        self.connection_attempts += 1
        if self.reject_connections:
            self.reject_connections -= 1
            return _json(503, {"detail": {"status": "service_unavailable", "message": "Busy"}})
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        agent = self.agents.get(request.query.get("agent_id", ""))
        refusal = self._auth_refusal(request, agent)
        if agent is None or refusal:
            reason = refusal or "Agent not found"
            await ws.close(code=1008, message=reason.encode())
            return ws
        script = self.script_factory() if self.script_factory else RealtimeScript()
        conversation = EmulatedConversation(self, ws, agent, script)
        self.conversations.append(conversation)
        self._added.set()
        self._added = asyncio.Event()
        await conversation.run()
        return ws

    def _auth_refusal(self, request: web.Request, agent: EmulatedAgent | None) -> str | None:
        token = request.query.get("conversation_signature") or request.query.get("token")
        if token is None:
            return "Authorization required" if agent is not None and agent.enable_auth else None
        signature = self.signatures.get(token)
        if signature is None or agent is None or signature.agent_id != agent.agent_id:
            return "Invalid conversation signature"
        if self.clock() - signature.issued > self.signed_url_ttl:
            return "Conversation signature expired"
        if signature.single_use and signature.used:
            return "Conversation signature already used"
        signature.used = True
        return None

    # -- REST --------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> web.Response | None:
        self.rest_requests.append((request.method, request.path_qs))
        if request.headers.get("xi-api-key") != self.api_key:
            return _json(
                401, {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}
            )
        return None

    async def _signed_url(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        agent_id = request.query.get("agent_id")
        if not agent_id:
            return _json(422, {"detail": [{"loc": ["query", "agent_id"], "msg": "Field required"}]})
        if agent_id not in self.agents:
            return _json(
                404, {"detail": {"status": "agent_not_found", "message": "Agent not found"}}
            )
        single = request.query.get("include_conversation_id", "").lower() == "true"
        token = secrets.token_urlsafe(24)
        self.signatures[token] = Signature(agent_id, self.clock(), single)
        scheme = "wss" if request.secure else "ws"
        query = urlencode({"agent_id": agent_id, "conversation_signature": token})
        body: dict[str, Any] = {
            "signed_url": f"{scheme}://{request.host}/v1/convai/conversation?{query}"
        }
        return _json(200, body)

    def _store_tool(self, config: dict[str, Any], tool_id: str | None = None) -> str:
        tool_id = tool_id or f"tool_{self.next_serial():024d}"
        self.tools[tool_id] = {
            "id": tool_id,
            "tool_config": config,
            "access_info": {
                "is_creator": True,
                "creator_name": "emulator",
                "creator_email": "emulator@example.com",
                "role": "admin",
            },
            "usage_stats": {"avg_latency_secs": 0.0},
        }
        return tool_id

    async def _list_tools(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        types = set(request.query.getall("types", []))
        tools = [
            t for t in self.tools.values() if not types or t["tool_config"].get("type") in types
        ]
        return _json(200, {"tools": tools, "has_more": False, "next_cursor": None})

    async def _tool_body(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _json(422, {"detail": [{"loc": ["body"], "msg": "Invalid JSON"}]})
        problems = check_tool_request(body)
        if problems:
            return _json(422, {"detail": [{"loc": ["body"], "msg": p} for p in problems]})
        config = body["tool_config"]
        assert isinstance(config, dict)
        return config

    async def _create_tool(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        config = await self._tool_body(request)
        if isinstance(config, web.Response):
            return config
        tool_id = self._store_tool(config)
        return _json(200, self.tools[tool_id])

    async def _update_tool(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        tool_id = request.match_info["tool_id"]
        if tool_id not in self.tools:
            return _json(404, {"detail": {"status": "tool_not_found", "message": "Tool not found"}})
        config = await self._tool_body(request)
        if isinstance(config, web.Response):
            return config
        self._store_tool(config, tool_id)
        return _json(200, self.tools[tool_id])

    def _agent_json(self, agent: EmulatedAgent) -> dict[str, Any]:
        return {
            "agent_id": agent.agent_id,
            "name": agent.name,
            "conversation_config": {
                "agent": {
                    "first_message": agent.first_message or "",
                    "language": agent.language,
                    "prompt": {"prompt": agent.prompt, "tool_ids": list(agent.tool_ids)},
                },
                "tts": {
                    "voice_id": agent.voice_id,
                    "agent_output_audio_format": agent.output_format,
                },
                "asr": {"user_input_audio_format": agent.input_format},
                "conversation": {"client_events": list(agent.client_events)},
            },
            "platform_settings": {
                "auth": {"enable_auth": agent.enable_auth},
                "overrides": {"conversation_config_override": agent.platform_overrides()},
            },
        }

    async def _get_agent(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        agent = self.agents.get(request.match_info["agent_id"])
        if agent is None:
            return _json(
                404, {"detail": {"status": "agent_not_found", "message": "Agent not found"}}
            )
        return _json(200, self._agent_json(agent))

    async def _update_agent(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        agent = self.agents.get(request.match_info["agent_id"])
        if agent is None:
            return _json(
                404, {"detail": {"status": "agent_not_found", "message": "Agent not found"}}
            )
        try:
            body = orjson.loads(await request.read())
            prompt = body["conversation_config"]["agent"]["prompt"]
            tool_ids = prompt["tool_ids"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            msg = "only conversation_config.agent.prompt.tool_ids can be changed here"
            return _json(422, {"detail": [{"loc": ["body"], "msg": msg}]})
        unknown = [t for t in tool_ids if t not in self.tools]
        if unknown:
            return _json(422, {"detail": [{"loc": ["body"], "msg": f"unknown tool ids {unknown}"}]})
        agent.tool_ids = list(tool_ids)
        return _json(200, self._agent_json(agent))


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")
