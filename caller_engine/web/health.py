"""GET /health (liveness) and GET /ready (readiness) for load balancers and orchestrators.

/health answers 200 while the process can serve calls in progress, `degraded` when the
database does not answer (calls in progress go on); 503 only while draining. /ready answers
503 whenever new calls should go elsewhere: draining, or no database to record them in.
"""

from __future__ import annotations

import time

from aiohttp import web

from caller_engine.logging import utc_now_iso
from caller_engine.web.errors import json_response
from caller_engine.web.schemas import HealthAnswer, ReadyAnswer
from caller_engine.web.state import SERVICES


async def health(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    database_ok = await services.store.ping()
    status = "draining" if services.draining else "ok" if database_ok else "degraded"
    body = HealthAnswer(
        status=status,
        timestamp=utc_now_iso(),
        uptime=round(time.monotonic() - services.started_at, 3),
        activeCalls=len(services.active),
        database="ok" if database_ok else "unavailable",
    )
    return json_response(body.model_dump(), 503 if services.draining else 200)


async def ready(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    database_ok = await services.store.ping()
    is_ready = database_ok and not services.draining
    body = ReadyAnswer(
        ready=is_ready,
        database="ok" if database_ok else "unavailable",
        draining=services.draining,
    )
    return json_response(body.model_dump(), 200 if is_ready else 503)
