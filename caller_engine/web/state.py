"""What the request handlers share, stored on the aiohttp application."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiohttp import web

from caller_engine.bridge.bridge import Bridge
from caller_engine.bridge.registry import ActiveCalls
from caller_engine.calls.service import CallService
from caller_engine.calls.store import CallStore
from caller_engine.config import Settings
from caller_engine.metrics import Metrics
from caller_engine.telephony.rest import TwilioGateway
from caller_engine.tools.transfer import NAME as TRANSFER_CALL


@dataclass
class Services:
    settings: Settings
    gateway: TwilioGateway
    store: CallStore
    calls: CallService
    bridge: Bridge
    active: ActiveCalls
    metrics: Metrics
    started_at: float = field(default_factory=time.monotonic)
    draining: bool = False

    @property
    def tool_names(self) -> frozenset[str]:
        return self.bridge.tools.names | {TRANSFER_CALL}


SERVICES = web.AppKey("services", Services)
