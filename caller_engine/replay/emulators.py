"""The peers replay runs for the server under test: Twilio's REST API (always: replay plays
Twilio, so it must see the calls the server places) and, with the bundled model, the realtime
model's emulator (OpenAI Realtime, Gemini Live with `provider="gemini"`, ElevenLabs Agents
with `provider="elevenlabs"`, or Nova Sonic's HTTP/2 stream with `provider="nova_sonic"`) and
the Chat Completions emulator for summaries. `server_env()` is what the server needs to use
them.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from caller_engine.replay.defaults import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    DEFAULT_GEMINI_KEY,
    DEFAULT_OPENAI_KEY,
    DEFAULT_PHONE_NUMBER,
    PROVIDERS,
)
from caller_engine.sim.elevenlabs import ElevenLabsEmulator
from caller_engine.sim.gemini import GeminiLiveEmulator
from caller_engine.sim.nova_sonic import TEST_CREDENTIALS, NovaSonicEmulator
from caller_engine.sim.openai.chat import ChatCompletionsEmulator
from caller_engine.sim.openai.realtime import RealtimeEmulator
from caller_engine.sim.twilio.rest import TwilioRestEmulator

GEMINI_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
DEFAULT_ELEVENLABS_KEY = "xi-replay"
ELEVENLABS_AGENT = "agent_replay"
CHUNK_MS = 100  # model audio per delta


@dataclass(frozen=True)
class EmulatorOptions:
    host: str = "127.0.0.1"  # where to listen (0.0.0.0 for a remote server)
    advertise_host: str | None = None  # how the server reaches us; defaults to host
    port: int = 0  # first of three consecutive ports (model, Twilio REST, chat); 0: any
    model: bool = True  # bundled model emulator; False: the server's own model
    provider: str = "openai"  # which realtime provider the bundled model emulates
    model_pace: float = 2.0  # model audio sent this many times faster than real time
    late_deltas: int = 2  # deltas still sent after an interruption, as on the wire
    account_sid: str = DEFAULT_ACCOUNT_SID
    auth_token: str = DEFAULT_AUTH_TOKEN
    openai_key: str = DEFAULT_OPENAI_KEY
    phone_number: str = DEFAULT_PHONE_NUMBER


class _Site:
    def __init__(self, app: web.Application) -> None:
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        await self._runner.cleanup()


class Emulators:
    def __init__(self, options: EmulatorOptions | None = None) -> None:
        self.options = options or EmulatorOptions()
        opts = self.options
        self.rest = TwilioRestEmulator(opts.account_sid, opts.auth_token)
        self.model: RealtimeEmulator | None = None
        self.gemini: GeminiLiveEmulator | None = None
        self.nova_sonic: NovaSonicEmulator | None = None
        self.elevenlabs: ElevenLabsEmulator | None = None
        self.chat: ChatCompletionsEmulator | None = None
        if opts.provider not in PROVIDERS:
            raise ValueError(f"unknown provider {opts.provider!r}")
        interval = CHUNK_MS / 1000 / opts.model_pace if opts.model_pace > 0 else 0.0
        if opts.model and opts.provider == "gemini":
            self.gemini = GeminiLiveEmulator(
                api_key=DEFAULT_GEMINI_KEY,
                chunk_ms=CHUNK_MS,
                delta_interval=interval,
                late_chunks=opts.late_deltas,
            )
        elif opts.model and opts.provider == "nova_sonic":
            self.nova_sonic = NovaSonicEmulator(
                chunk_ms=CHUNK_MS, speedup=opts.model_pace, late_chunks=opts.late_deltas
            )
        elif opts.model and opts.provider == "elevenlabs":
            # Agent audio in the service's own irregular bursts, as fast as it is generated.
            self.elevenlabs = ElevenLabsEmulator(api_key=DEFAULT_ELEVENLABS_KEY)
            self.elevenlabs.add_agent(ELEVENLABS_AGENT, enable_auth=True)
            self.elevenlabs.speak_script_first_line = True
        elif opts.model:
            self.model = RealtimeEmulator(
                api_key=opts.openai_key,
                chunk_ms=CHUNK_MS,
                delta_interval=interval,
                late_deltas=opts.late_deltas,
                keep_audio_events=False,
            )
        if opts.model:
            self.chat = ChatCompletionsEmulator(api_key=opts.openai_key)
        self._sites: dict[str, _Site] = {}

    async def start(self) -> None:
        opts = self.options
        apps: list[tuple[str, web.Application | None]] = [
            ("model", self._model_app()),
            ("rest", self.rest.app()),
            ("chat", self.chat.app() if self.chat else None),
        ]
        for offset, (name, app) in enumerate(apps):
            if app is None:
                continue
            site = _Site(app)
            await site.start(opts.host, opts.port + offset if opts.port else 0)
            self._sites[name] = site
        if self.nova_sonic is not None:  # an HTTP/2 server of its own, on the model's port
            await self.nova_sonic.start(opts.port, opts.host)

    def _model_app(self) -> web.Application | None:
        if self.gemini is not None:
            return self.gemini.app()
        if self.elevenlabs is not None:  # its REST API and conversation socket on one port
            return self.elevenlabs.app()
        return self.model.app() if self.model is not None else None

    async def stop(self) -> None:
        for site in self._sites.values():
            await site.stop()
        self._sites.clear()
        if self.nova_sonic is not None:
            await self.nova_sonic.stop()

    def reset(self) -> None:
        """Forget the calls and sessions of earlier runs (they hold every frame of audio)."""
        self.rest.calls.clear()
        self.rest.messages.clear()
        self.rest.requests.clear()
        if self.model is not None:
            self.model.sessions.clear()
        if self.gemini is not None:
            self.gemini.sessions.clear()
            self.gemini.conversations.clear()
            self.gemini.tool_outputs.clear()
        if self.nova_sonic is not None:
            self.nova_sonic.sessions.clear()
            self.nova_sonic.streams.clear()
        if self.elevenlabs is not None:
            self.elevenlabs.conversations.clear()
        if self.chat is not None:
            self.chat.requests.clear()
            self.chat.request_headers.clear()
            self.chat.responses.clear()

    @property
    def realtime(self) -> RealtimeEmulator | ElevenLabsEmulator | None:
        """The emulator the calls' model connections reach (its hooks carry the markers)."""
        return self.elevenlabs if self.elevenlabs is not None else self.model

    def _url(self, name: str, scheme: str = "http") -> str:
        host = self.options.advertise_host or self.options.host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        if name == "model" and self.nova_sonic is not None:
            return f"{scheme}://{host}:{self.nova_sonic.port}"
        return f"{scheme}://{host}:{self._sites[name].port}"

    def server_env(self) -> dict[str, str]:
        """The server settings that point it at these emulators."""
        opts = self.options
        env = {
            "TWILIO_ACCOUNT_SID": opts.account_sid,
            "TWILIO_AUTH_TOKEN": opts.auth_token,
            "TWILIO_PHONE_NUMBER": opts.phone_number,
            "TWILIO_API_BASE_URL": self._url("rest"),
            # Every replayed call rings the same emulated number, at any hour.
            "CALLING_HOURS": "00:00-24:00",
            "MAX_CALLS_PER_NUMBER": "0",
        }
        if self.model is not None:
            env["OPENAI_REALTIME_URL"] = self._url("model", "ws") + "/v1/realtime"
        if self.gemini is not None:
            env["REALTIME_PROVIDER"] = "gemini"
            env["GEMINI_API_KEY"] = DEFAULT_GEMINI_KEY
            env["GEMINI_LIVE_URL"] = self._url("model", "ws") + GEMINI_PATH
        if self.elevenlabs is not None:
            env["REALTIME_PROVIDER"] = "elevenlabs"
            env["ELEVENLABS_AGENT_ID"] = ELEVENLABS_AGENT
            env["ELEVENLABS_API_KEY"] = DEFAULT_ELEVENLABS_KEY
            env["ELEVENLABS_API_URL"] = self._url("model")
        if self.nova_sonic is not None:
            env["REALTIME_PROVIDER"] = "nova_sonic"
            env["AWS_ACCESS_KEY_ID"] = TEST_CREDENTIALS.access_key_id
            env["AWS_SECRET_ACCESS_KEY"] = TEST_CREDENTIALS.secret_access_key
            env["BEDROCK_RUNTIME_URL"] = self._url("model")
        if self.chat is not None:  # summaries (and the OpenAI key the realtime model uses)
            env["OPENAI_API_KEY"] = opts.openai_key
            env["OPENAI_BASE_URL"] = self._url("chat") + "/v1"
        return env
