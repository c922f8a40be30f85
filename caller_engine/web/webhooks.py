"""POST /webhooks/call-status and /webhooks/amd: Twilio reports on a call."""

from __future__ import annotations

from aiohttp import web

from caller_engine.web.security import twilio_form, twilio_request_error
from caller_engine.web.state import SERVICES


async def call_status(request: web.Request) -> web.Response:
    params = await twilio_form(request)
    if (denied := twilio_request_error(request, params)) is not None:
        return denied
    # The callbackId of our own callback URL names the call, even before its CallSid is stored.
    await request.app[SERVICES].calls.on_status(params, request.query.get("callbackId"))
    return web.Response(status=200)


async def amd(request: web.Request) -> web.Response:
    params = await twilio_form(request)
    if (denied := twilio_request_error(request, params)) is not None:
        return denied
    await request.app[SERVICES].calls.on_amd(params, request.query.get("callbackId"))
    return web.Response(status=200)
