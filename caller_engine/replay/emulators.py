"""The peers replay runs for the server under test: Twilio's REST API (always: replay plays
Twilio, so it must see the calls the server places) and, with the bundled model, the OpenAI
Realtime and Chat Completions emulators. `server_env()` is what the server needs to use them.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from caller_engine.replay.defaults import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    DEFAULT_OPENAI_KEY,
    DEFAULT_PHONE_NUMBER,
)
from caller_engine.sim.openai_chat import ChatCompletionsEmulator
from caller_engine.sim.openai_realtime import RealtimeEmulator
from caller_engine.sim.twilio_rest import TwilioRestEmulator

CHUNK_MS = 100  # model audio per delta


@dataclass(frozen=True)
class EmulatorOptions:
    host: str = "127.0.0.1"  # where to listen (0.0.0.0 for a remote server)
    advertise_host: str | None = None  # how the server reaches us; defaults to host
    port: int = 0  # first of three consecutive ports (model, Twilio REST, chat); 0: any
    model: bool = True  # bundled model emulator; False: the server's own model
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
        self.chat: ChatCompletionsEmulator | None = None
        if opts.model:
            interval = CHUNK_MS / 1000 / opts.model_pace if opts.model_pace > 0 else 0.0
            self.model = RealtimeEmulator(
                api_key=opts.openai_key,
                chunk_ms=CHUNK_MS,
                delta_interval=interval,
                late_deltas=opts.late_deltas,
                keep_audio_events=False,
            )
            self.chat = ChatCompletionsEmulator(api_key=opts.openai_key)
        self._sites: dict[str, _Site] = {}

    async def start(self) -> None:
        opts = self.options
        apps: list[tuple[str, web.Application | None]] = [
            ("model", self.model.app() if self.model else None),
            ("rest", self.rest.app()),
            ("chat", self.chat.app() if self.chat else None),
        ]
        for offset, (name, app) in enumerate(apps):
            if app is None:
                continue
            site = _Site(app)
            await site.start(opts.host, opts.port + offset if opts.port else 0)
            self._sites[name] = site

    async def stop(self) -> None:
        for site in self._sites.values():
            await site.stop()
        self._sites.clear()

    def reset(self) -> None:
        """Forget the calls and sessions of earlier runs (they hold every frame of audio)."""
        self.rest.calls.clear()
        self.rest.messages.clear()
        self.rest.requests.clear()
        if self.model is not None:
            self.model.sessions.clear()
        if self.chat is not None:
            self.chat.requests.clear()
            self.chat.request_headers.clear()
            self.chat.responses.clear()

    def _url(self, name: str, scheme: str = "http") -> str:
        host = self.options.advertise_host or self.options.host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
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
            env["OPENAI_API_KEY"] = opts.openai_key
            env["OPENAI_REALTIME_URL"] = self._url("model", "ws") + "/v1/realtime"
            env["OPENAI_BASE_URL"] = self._url("chat") + "/v1"
        return env
