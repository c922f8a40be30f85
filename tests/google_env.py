"""A running Google emulator with one service account, one shared calendar and a mailbox."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from caller_engine.config import Settings
from caller_engine.logging import call_logger
from caller_engine.sim.google import GoogleEmulator, new_service_account_key
from caller_engine.sim.google.calendar import EmulatedCalendar
from caller_engine.sim.server import LoopbackServer
from caller_engine.tools.google_client import GMAIL_SCOPES, GoogleApis
from caller_engine.tools.registry import ToolContext
from tests.conftest import make_settings

CLIENT_EMAIL = "caller@project-1.iam.gserviceaccount.com"
CALENDAR_ID = "bookings@group.calendar.google.com"
MAILBOX = "office@example.com"
CALLEE = "+15550002222"
TIMEZONE = "America/New_York"


@functools.cache
def service_key() -> tuple[str, str]:
    """(private PEM, public PEM), generated once per test session."""
    return new_service_account_key()


@functools.cache
def other_key() -> tuple[str, str]:
    return new_service_account_key()


@dataclass
class GoogleEnv:
    emulator: GoogleEmulator
    url: str
    calendar: EmulatedCalendar
    clients: list[GoogleApis] = field(default_factory=list)

    def apis(self, *, private_key: str | None = None, timeout: float = 3.0) -> GoogleApis:
        apis = GoogleApis(
            CLIENT_EMAIL,
            private_key or service_key()[0],
            token_uri=f"{self.url}/token",
            api_base_url=self.url,
            impersonated_user=MAILBOX,
            timeout=timeout,
        )
        self.clients.append(apis)
        return apis

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "enable_calendar_tools": True,
            "enable_email_tools": True,
            "google_client_email": CLIENT_EMAIL,
            "google_private_key": service_key()[0],
            "google_calendar_id": CALENDAR_ID,
            "google_impersonated_user": MAILBOX,
            "google_api_base_url": self.url,
            "google_token_uri": f"{self.url}/token",
            "business_timezone": TIMEZONE,
            **overrides,
        }
        return make_settings(**values)


@asynccontextmanager
async def running_google(*, delegate_gmail: bool = True) -> AsyncIterator[GoogleEnv]:
    emulator = GoogleEmulator()
    emulator.add_service_account(
        CLIENT_EMAIL, service_key()[1], delegated_scopes=GMAIL_SCOPES if delegate_gmail else ()
    )
    calendar = emulator.add_calendar(CALENDAR_ID, timezone=TIMEZONE, share_with=[CLIENT_EMAIL])
    server = LoopbackServer(emulator.app())
    url = await server.start()
    env = GoogleEnv(emulator, url, calendar)
    try:
        yield env
    finally:
        for apis in env.clients:
            apis.close()
        await server.stop()


def context(callback_id: str = "cb-1", callee: str = CALLEE) -> ToolContext:
    return ToolContext(
        callback_id=callback_id,
        call_sid="CA" + "1" * 32,
        callee=callee,
        log=call_logger(callback_id),
    )
