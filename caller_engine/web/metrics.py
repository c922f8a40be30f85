"""GET /metrics: Prometheus text format (behind the API key unless on METRICS_PORT)."""

from __future__ import annotations

from aiohttp import web

from caller_engine.metrics import CONTENT_TYPE, Metrics
from caller_engine.web.security import api_key_error
from caller_engine.web.state import SERVICES


def _response(metrics: Metrics) -> web.Response:
    response = web.Response(body=metrics.render())
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


async def metrics(request: web.Request) -> web.Response:
    if (denied := api_key_error(request)) is not None:
        return denied
    return _response(request.app[SERVICES].metrics)


def metrics_app(source: Metrics) -> web.Application:
    """The unauthenticated app served on METRICS_PORT (keep that port private)."""

    async def handler(_request: web.Request) -> web.Response:
        return _response(source)

    app = web.Application()
    app.router.add_get("/metrics", handler)
    return app
