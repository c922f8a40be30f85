"""Database backends for the store, outbox and delivery tests.

Every test gets its own database: a SQLite file in tmp_path, or (when TEST_DATABASE_URL is
set) a fresh PostgreSQL schema that is dropped afterwards, so runs can repeat and overlap.
Import the fixtures you use: `from tests.store_backends import db, store  # noqa: F401`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text

from caller_engine.calls.sql_engine import PostgresDatabase, driver_url
from caller_engine.calls.sql_store import SqlCallStore
from caller_engine.sim.orchestrator import OrchestratorEmulator
from caller_engine.sim.server import LoopbackServer
from caller_engine.sim.twilio.rest import TwilioRestEmulator
from caller_engine.web.app import create_app
from tests.conftest import Api, daytime, make_settings

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "").strip()
WEBHOOK_SECRET = "whsec_test_secret"

needs_postgres = pytest.mark.skipif(
    not TEST_DATABASE_URL, reason="TEST_DATABASE_URL is not set (PostgreSQL tests)"
)
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=needs_postgres),
]

# Fast delivery timings: tests never wait for real backoff seconds.
FAST_DELIVERY: dict[str, Any] = {
    "delivery_poll_interval": 0.02,
    "delivery_backoff_base": 0.01,
    "delivery_backoff_cap": 0.05,
    "delivery_timeout": 2.0,
    "delivery_lease": 5.0,
    "result_webhook_secret": WEBHOOK_SECRET,
    "result_webhook_allow_private": True,  # the orchestrator emulator is on loopback
}


@dataclass(frozen=True)
class Database:
    kind: str
    url: str
    schema: str | None = None

    async def open_store(self, **kwargs: Any) -> SqlCallStore:
        return await SqlCallStore.open(self.url, schema=self.schema, **kwargs)


class FakeClock:
    """A settable UTC clock for lease and retry tests."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def _postgres_schema() -> AsyncIterator[str]:
    schema = "ce_test_" + secrets.token_hex(6)
    engine = PostgresDatabase(driver_url(TEST_DATABASE_URL), None).engine
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        yield schema
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await engine.dispose()


@pytest.fixture(params=BACKENDS)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        yield Database("sqlite", f"sqlite:///{tmp_path}/store.db")
        return
    async for schema in _postgres_schema():
        yield Database("postgres", TEST_DATABASE_URL, schema)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(db: Database, clock: FakeClock) -> AsyncIterator[SqlCallStore]:
    opened = await db.open_store(clock=clock)
    yield opened
    await opened.close()


@pytest.fixture
async def orchestrator() -> AsyncIterator[tuple[OrchestratorEmulator, str]]:
    emulator = OrchestratorEmulator(WEBHOOK_SECRET)
    server = LoopbackServer(emulator.app())
    root = await server.start()
    yield emulator, root + "/results"
    await server.stop()


class Instances:
    """Service instances sharing one database, started and stopped at will."""

    def __init__(self, database: Database, twilio_url: str) -> None:
        self.database = database
        self.twilio_url = twilio_url
        self._running: list[tuple[LoopbackServer, aiohttp.ClientSession]] = []

    async def start(self, clock: Callable[[], datetime] = daytime, **overrides: Any) -> Api:
        """An instance; `clock` is the wall clock its calling hours are judged by."""
        settings = make_settings(
            **{"twilio_api_base_url": self.twilio_url, **FAST_DELIVERY, **overrides}
        )
        app = create_app(settings, store=await self.database.open_store(), clock=clock)
        server = LoopbackServer(app)
        root = await server.start()
        session = aiohttp.ClientSession()
        self._running.append((server, session))
        return Api(session, root, app)

    async def stop(self, api: Api) -> None:
        """Shut one instance down like a restart would (its store and worker close)."""
        for server, session in list(self._running):
            if session is api.session:
                self._running.remove((server, session))
                await session.close()
                await server.stop()

    async def stop_all(self) -> None:
        for server, session in self._running:
            await session.close()
            await server.stop()
        self._running.clear()


@pytest.fixture
async def instances(
    db: Database, twilio: tuple[TwilioRestEmulator, str]
) -> AsyncIterator[Instances]:
    group = Instances(db, twilio[1])
    yield group
    await group.stop_all()
