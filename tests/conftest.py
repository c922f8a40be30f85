from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from caller_engine.config import Settings, load_settings
from caller_engine.sim.server import LoopbackServer
from caller_engine.sim.twilio.rest import TwilioRestEmulator
from caller_engine.telephony.signature import sign_twilio_request
from caller_engine.web.app import create_app
from caller_engine.web.state import SERVICES, Services

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "test-auth-token"
API_KEY = "test-api-key"
PUBLIC_BASE = "https://calls.example.com"
# The wall clock calling hours are judged by in the app tests: a Wednesday, 22:30 UTC, when
# it is between 08:00 and 21:00 in every zone of country code +1 (08:30 in Guam, 11:30 in
# Pago Pago, 19:00 in Newfoundland), so the suites' +1555 numbers may be called whatever the
# real hour. The guardrails stay on with their defaults; their own tests set other clocks.
DAYTIME = datetime(2030, 1, 2, 22, 30, tzinfo=UTC)


def daytime() -> datetime:
    return DAYTIME


@pytest.fixture(autouse=True)
def _database_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's default store is a SQLite file: keep it in the test's own directory."""
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/calls.db")


@pytest.fixture
async def twilio() -> AsyncIterator[tuple[TwilioRestEmulator, str]]:
    emulator = TwilioRestEmulator(ACCOUNT_SID, AUTH_TOKEN)
    server = LoopbackServer(emulator.app())
    url = await server.start()
    yield emulator, url
    await server.stop()


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "_env_file": None,
        "base_url": PUBLIC_BASE,
        "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": AUTH_TOKEN,
        "twilio_phone_number": "+15550001111",
        "openai_api_key": "sk-test",
        "api_key": API_KEY,
    }
    values.update(overrides)
    return load_settings(**values)


class Api:
    """An HTTP client for the app under test that signs Twilio requests like Twilio."""

    def __init__(self, session: aiohttp.ClientSession, root: str, app: web.Application) -> None:
        self.session = session
        self.root = root
        self.app = app

    @property
    def services(self) -> Services:
        return self.app[SERVICES]

    def url(self, path: str) -> str:
        return self.root + path

    async def initiate(self, body: Any, key: str | None = API_KEY) -> aiohttp.ClientResponse:
        headers = {"X-API-Key": key} if key else {}
        return await self.session.post(self.url("/call/initiate"), json=body, headers=headers)

    async def twilio_post(
        self, path: str, params: dict[str, str], *, signature: str | None = None
    ) -> aiohttp.ClientResponse:
        sig = signature or sign_twilio_request(AUTH_TOKEN, PUBLIC_BASE + path, params)
        return await self.session.post(
            self.url(path), data=params, headers={"X-Twilio-Signature": sig}
        )


class ApiPool:
    """Apps under test on loopback, each with a client session; closed together."""

    def __init__(self) -> None:
        self._servers: list[LoopbackServer] = []
        self._sessions: list[aiohttp.ClientSession] = []

    async def open(
        self, settings: Settings, store: Any = None, clock: Callable[[], datetime] = daytime
    ) -> Api:
        app = create_app(settings, store=store, clock=clock)
        server = LoopbackServer(app)
        root = await server.start()
        self._servers.append(server)
        session = aiohttp.ClientSession()
        self._sessions.append(session)
        return Api(session, root, app)

    async def close(self) -> None:
        for session in self._sessions:
            await session.close()
        for server in self._servers:
            await server.stop()


AppFactory = Callable[..., "AsyncIterator[Api]"]


@pytest.fixture
async def api_factory(
    twilio: tuple[TwilioRestEmulator, str],
) -> AsyncIterator[Callable[..., Any]]:
    pool = ApiPool()

    async def start(clock: Callable[[], datetime] = daytime, **overrides: Any) -> Api:
        settings = make_settings(**{"twilio_api_base_url": twilio[1], **overrides})
        return await pool.open(settings, clock=clock)

    yield start
    await pool.close()


@pytest.fixture
async def api(api_factory: Callable[..., Any]) -> Api:
    result: Api = await api_factory()
    return result
