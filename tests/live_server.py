"""The real server (and the Twilio REST emulator) on loopback in a thread of its own, for
synchronous clients such as the property-based fuzz tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from typing import Any, TypeVar

from caller_engine.sim.server import LoopbackServer
from caller_engine.sim.twilio.rest import TwilioRestEmulator
from caller_engine.web.app import create_app
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, daytime, make_settings

T = TypeVar("T")


class LiveServer:
    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.twilio = TwilioRestEmulator(ACCOUNT_SID, AUTH_TOKEN)
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._servers: list[LoopbackServer] = []

    def run(self, coro: Awaitable[T]) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)  # type: ignore[arg-type]

    async def _start(self) -> str:
        rest = LoopbackServer(self.twilio.app())
        twilio_url = await rest.start()
        self._servers.append(rest)
        settings = make_settings(twilio_api_base_url=twilio_url, **self.settings)
        # Calling hours are judged at the app tests' daytime clock, not the real hour.
        app = LoopbackServer(create_app(settings, clock=daytime))
        url = await app.start()
        self._servers.append(app)
        return url

    async def _stop(self) -> None:
        for server in reversed(self._servers):
            await server.stop()

    def start(self) -> LiveServer:
        self._thread.start()
        self.url = self.run(self._start())
        return self

    def stop(self) -> None:
        self.run(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
