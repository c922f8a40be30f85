"""What the request handlers share, stored on the aiohttp application."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from caller_engine.bridge.registry import ActiveCalls
from caller_engine.calls.service import CallService
from caller_engine.calls.store import CallStore
from caller_engine.config import Settings
from caller_engine.telephony.rest import TwilioGateway


@dataclass
class Services:
    settings: Settings
    gateway: TwilioGateway
    store: CallStore
    calls: CallService
    active: ActiveCalls = field(default_factory=ActiveCalls)
    started_at: float = field(default_factory=time.monotonic)
    draining: bool = False
    tool_names: frozenset[str] = frozenset()
    prewarm: Callable[[str, str], Awaitable[None]] = field(default=lambda _cb, _sid: _noop())


async def _noop() -> None:
    return None


SERVICES = web.AppKey("services", Services)
