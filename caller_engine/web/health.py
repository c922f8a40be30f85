"""GET /health: liveness for load balancers; 503 while draining."""

from __future__ import annotations

import time

from aiohttp import web

from caller_engine.logging import utc_now_iso
from caller_engine.web.errors import json_response
from caller_engine.web.state import SERVICES


async def health(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    body = {
        "status": "draining" if services.draining else "ok",
        "timestamp": utc_now_iso(),
        "uptime": round(time.monotonic() - services.started_at, 3),
        "activeCalls": len(services.active),
    }
    return json_response(body, 503 if services.draining else 200)
