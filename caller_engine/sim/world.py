"""Everything a simulated call needs, on loopback: the real server and an emulator of each
peer (Twilio REST and phone network, OpenAI Realtime and Chat, Google, the orchestrator)."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from caller_engine.calls.models import AgentOverrides
from caller_engine.calls.result import CallResult
from caller_engine.config import Settings, load_settings
from caller_engine.realtime.elevenlabs.agent_tools import AgentToolsClient, client_tools
from caller_engine.sim.elevenlabs import ElevenLabsEmulator
from caller_engine.sim.gemini import GeminiLiveEmulator
from caller_engine.sim.google import GoogleEmulator, new_service_account_key
from caller_engine.sim.google.calendar import EmulatedCalendar
from caller_engine.sim.nova_sonic import TEST_CREDENTIALS, NovaSonicEmulator
from caller_engine.sim.openai.chat import ChatCompletionsEmulator
from caller_engine.sim.openai.realtime import RealtimeEmulator
from caller_engine.sim.orchestrator import OrchestratorEmulator
from caller_engine.sim.scenarios import BUSINESS, CALLEE_NUMBER, TIMEZONE, Scenario
from caller_engine.sim.server import LoopbackServer
from caller_engine.sim.twilio.phone import ActiveEmulatedCall, PhoneNetwork
from caller_engine.sim.twilio.rest import EmulatedCall, TwilioRestEmulator
from caller_engine.tools.google_client import GMAIL_SCOPES
from caller_engine.web.app import create_app
from caller_engine.web.state import SERVICES

ACCOUNT_SID = "AC" + "5" * 32
SERVICE_ACCOUNT = "caller-engine@simulated-project.iam.gserviceaccount.com"
CALENDAR_ID = "bookings@simulated.example.com"
MAILBOX = "office@simulated.example.com"


GEMINI_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Results:
    def __init__(self) -> None:
        self.items: list[CallResult] = []
        self.changed = asyncio.Event()

    async def publish(self, result: CallResult) -> None:
        self.items.append(result)
        self.changed.set()


@dataclass
class World:
    scenario: Scenario
    settings: Settings
    app: web.Application
    base_url: str
    rest: TwilioRestEmulator
    phone: PhoneNetwork
    model: RealtimeEmulator
    chat: ChatCompletionsEmulator
    google: GoogleEmulator
    calendar: EmulatedCalendar
    orchestrator: OrchestratorEmulator
    http: aiohttp.ClientSession
    results: _Results
    servers: list[LoopbackServer] = field(default_factory=list)
    tmpdir: str = ""
    api_key: str = ""
    gemini: GeminiLiveEmulator | None = None
    nova_sonic: NovaSonicEmulator | None = None
    elevenlabs: ElevenLabsEmulator | None = None

    @property
    def model_violations(self) -> list[str]:
        """Protocol mistakes the emulator of the call's provider saw."""
        if self.nova_sonic is not None:
            errors = [f"{kind}: {message}" for kind, message in self.nova_sonic.stream_errors]
            return self.nova_sonic.violations + errors
        if self.gemini is not None:
            return self.gemini.violations
        if self.elevenlabs is not None:
            return self.model.violations + self.elevenlabs.violations
        return self.model.violations

    async def drop_model(self) -> None:
        """Break the live model connection of the call's provider, unannounced."""
        if self.nova_sonic is not None:
            self.nova_sonic.drop(self.nova_sonic.sessions[-1])
        elif self.gemini is not None:
            await self.gemini.sessions[-1].drop()
        elif self.elevenlabs is not None:
            await self.elevenlabs.conversations[-1].drop(1011)
        else:
            await self.model.sessions[-1].drop()

    def call(self, call_sid: str) -> ActiveEmulatedCall | None:
        return self.phone.calls.get(call_sid)

    def _provider_agent(self) -> dict[str, Any]:
        """An ElevenLabs call carries its greeting (the agent allows that override), which also
        lets a conversation resumed after a reconnect or a declined transfer skip it."""
        if self.elevenlabs is None:
            return {}
        return {"greeting": f"Hi, this is Dana from {BUSINESS}."}

    async def initiate(self, callback_id: str) -> tuple[int, dict[str, Any]]:
        """POST /call/initiate to the scenario's callee: (HTTP status, body)."""
        resp = await self.http.post(
            self.base_url + "/call/initiate",
            json={
                "callbackId": callback_id,
                "to": CALLEE_NUMBER,
                "agent": {
                    "metadata": {"scenario": self.scenario.name},
                    **self._provider_agent(),
                    **self.scenario.agent,
                },
            },
            headers={"X-API-Key": self.api_key},
        )
        return resp.status, await resp.json()

    async def place_call(self, callback_id: str) -> str:
        status, body = await self.initiate(callback_id)
        if status != 200:
            raise RuntimeError(f"initiate failed: {status} {body}")
        return str(body["callSid"])

    async def wait_result(self, callback_id: str, limit: float) -> CallResult:
        async with asyncio.timeout(limit):
            while True:
                for result in self.results.items:
                    if result.callbackId == callback_id:
                        return result
                self.results.changed.clear()
                await self.results.changed.wait()

    async def stop(self) -> None:
        await self.phone.close()
        for server in reversed(self.servers):
            await server.stop()
        if self.nova_sonic is not None:
            await self.nova_sonic.stop()
        await self.http.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)


async def start_world(
    scenario: Scenario,
    *,
    speed: float = 1.0,
    realtime_url: str | None = None,
    openai_key: str | None = None,
    overrides: dict[str, Any] | None = None,
    provider: str = "openai",
) -> World:
    """Start the emulators, then the server configured against them."""
    auth_token = secrets.token_hex(16)
    api_key = secrets.token_hex(16)
    webhook_secret = secrets.token_hex(16)
    rest = TwilioRestEmulator(ACCOUNT_SID, auth_token)
    model = RealtimeEmulator(script_factory=scenario.script)
    summary = scenario.summary
    chat = ChatCompletionsEmulator(structured=(lambda _body: summary) if summary else None)
    private_pem, public_pem = new_service_account_key()
    google = GoogleEmulator()
    google.add_service_account(SERVICE_ACCOUNT, public_pem, delegated_scopes=GMAIL_SCOPES)
    calendar = google.add_calendar(CALENDAR_ID, timezone=TIMEZONE, share_with=[SERVICE_ACCOUNT])
    orchestrator = OrchestratorEmulator(webhook_secret)
    servers = [LoopbackServer(x.app()) for x in (rest, model, chat, google, orchestrator)]
    for server in servers:
        await server.start()
    rest_srv, model_srv, chat_srv, google_srv, orch_srv = servers
    gemini: GeminiLiveEmulator | None = None
    provider_settings: dict[str, Any] = {}
    if provider == "gemini":
        gemini = GeminiLiveEmulator(api_key="gemini-test", script_factory=scenario.script)
        gemini_srv = LoopbackServer(gemini.app())
        await gemini_srv.start()
        servers.append(gemini_srv)
        provider_settings = {
            "realtime_provider": "gemini",
            "gemini_api_key": "gemini-test",
            "gemini_live_url": gemini_srv.ws_url + GEMINI_PATH,
        }
    nova_sonic: NovaSonicEmulator | None = None
    if provider == "nova_sonic":
        # Audio faster than the phone plays it, as the service sends it.
        nova_sonic = NovaSonicEmulator(
            script_factory=scenario.script, speedup=2.0 * speed, playback_speed=speed
        )
        await nova_sonic.start()
        provider_settings = {
            "realtime_provider": "nova_sonic",
            "aws_access_key_id": TEST_CREDENTIALS.access_key_id,
            "aws_secret_access_key": TEST_CREDENTIALS.secret_access_key,
            "bedrock_runtime_url": nova_sonic.url,
        }
    elevenlabs: ElevenLabsEmulator | None = None
    if provider == "elevenlabs":
        elevenlabs = _elevenlabs_emulator(scenario, speed)
        el_srv = LoopbackServer(elevenlabs.app())
        await el_srv.start()
        servers.append(el_srv)
        provider_settings = {
            "realtime_provider": "elevenlabs",
            "elevenlabs_agent_id": ELEVENLABS_AGENT,
            "elevenlabs_api_key": ELEVENLABS_KEY,
            "elevenlabs_api_url": el_srv.url,
        }
    tmpdir = tempfile.mkdtemp(prefix="caller-engine-sim-")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    real_model = realtime_url is not None
    values: dict[str, Any] = {
        "_env_file": None,
        "environment": "development",
        "base_url": base_url,
        "api_key": api_key,
        "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": auth_token,
        "twilio_phone_number": "+15550009999",
        "twilio_api_base_url": rest_srv.url,
        "openai_api_key": openai_key if real_model else "sk-test",
        "openai_realtime_url": realtime_url or model_srv.ws_url + "/v1/realtime",
        "openai_base_url": None if real_model else chat_srv.url + "/v1",
        "enable_calendar_tools": True,
        "enable_email_tools": True,
        "google_client_email": SERVICE_ACCOUNT,
        "google_private_key": private_pem,
        "google_calendar_id": CALENDAR_ID,
        "google_impersonated_user": MAILBOX,
        "google_api_base_url": google_srv.url,
        "google_token_uri": google_srv.url + "/token",
        "business_name": "Bright Dental",
        "business_type": "dental clinic",
        "business_timezone": TIMEZONE,
        "database_url": f"sqlite:///{tmpdir}/calls.db",
        "result_webhook_url": orch_srv.url + "/results",
        "result_webhook_secret": webhook_secret,
        **provider_settings,
        "result_webhook_allow_private": True,  # the orchestrator emulator is on loopback
        # The emulated callee may be called at any hour (`make demo` at 3 a.m.); the
        # do-not-call list and the frequency cap stay on.
        "calling_hours": "00:00-24:00",
        **scenario.settings,
        **(overrides or {}),
    }
    settings = load_settings(**values)
    app = create_app(settings)
    app_server = LoopbackServer(app)
    await app_server.start(port)
    servers.append(app_server)
    results = _Results()
    app[SERVICES].calls.add_sink(results)
    http = aiohttp.ClientSession()
    if elevenlabs is not None:
        # Our tools go onto the agent the way a user puts them there (elevenlabs tools --apply).
        tools = client_tools(app[SERVICES].bridge.tools_for(AgentOverrides()))
        await AgentToolsClient(http, settings.elevenlabs_api_url, ELEVENLABS_KEY).apply(
            ELEVENLABS_AGENT, tools
        )
    world_ref: list[World] = []

    def callee_for(call: EmulatedCall) -> Any:
        return scenario.callee(world_ref[0])

    phone = PhoneNetwork(
        rest,
        auth_token=auth_token,
        callee_factory=callee_for,
        playback_speed=speed,
        answer_delay=1.0 / speed,
        ring_delay=0.5 / speed,
        amd_delay=1.5 / speed,
        no_answer_after=20.0 / speed,
        session=http,
        people=scenario.people,
    )
    world = World(
        scenario=scenario,
        settings=settings,
        app=app,
        base_url=base_url,
        rest=rest,
        phone=phone,
        model=model,
        chat=chat,
        google=google,
        calendar=calendar,
        orchestrator=orchestrator,
        http=http,
        results=results,
        servers=servers,
        tmpdir=tmpdir,
        api_key=api_key,
        gemini=gemini,
        nova_sonic=nova_sonic,
        elevenlabs=elevenlabs,
    )
    world_ref.append(world)
    return world


ELEVENLABS_AGENT = "agent_simulated"
ELEVENLABS_KEY = "xi-simulated-key"


def _elevenlabs_emulator(scenario: Scenario, speed: float) -> ElevenLabsEmulator:
    """A private agent set up for telephony: μ-law both ways, the call's overrides allowed,
    corrections and tool responses among its client events, its end_call system tool on."""
    emulator = ElevenLabsEmulator(api_key=ELEVENLABS_KEY, script_factory=scenario.script)
    emulator.speak_script_first_line = True
    emulator.audible_speed = speed  # the phone plays the agent at this speed
    agent = emulator.add_agent(ELEVENLABS_AGENT, enable_auth=True)
    agent.allow_overrides("agent.first_message", "agent.prompt.prompt", "tts.voice_id")
    agent.client_events += ["agent_response_correction", "agent_tool_response"]
    return emulator
