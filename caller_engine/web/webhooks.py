"""POST /webhooks/call-status and /webhooks/amd: Twilio reports on a call.

A callback is acknowledged (2xx) only once it is stored. While the database is unavailable
the answer is 503, so Twilio retries (our callback URLs ask it to), and the callback also
waits in the pending writes, stored as soon as the database is back. Applying a callback
twice changes nothing, so whichever comes first wins and the other is a no-op.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from caller_engine.calls.availability import StoreUnavailable
from caller_engine.web.security import twilio_form, twilio_request_error
from caller_engine.web.state import SERVICES


async def _stored(
    request: web.Request, what: str, apply: Callable[[], Awaitable[object]]
) -> web.Response:
    callback_id = request.query.get("callbackId")
    try:
        await apply()
    except StoreUnavailable:
        request.app[SERVICES].calls.pending.defer(what, callback_id, apply)
        raise
    return web.Response(status=200)


async def call_status(request: web.Request) -> web.Response:
    params = dict(await twilio_form(request))
    if (denied := twilio_request_error(request, params)) is not None:
        return denied
    calls = request.app[SERVICES].calls
    # The callbackId of our own callback URL names the call, even before its CallSid is stored.
    callback_id = request.query.get("callbackId")
    status = params.get("CallStatus", "?")
    return await _stored(
        request, f"status callback {status}", lambda: calls.on_status(params, callback_id)
    )


async def amd(request: web.Request) -> web.Response:
    params = dict(await twilio_form(request))
    if (denied := twilio_request_error(request, params)) is not None:
        return denied
    calls = request.app[SERVICES].calls
    callback_id = request.query.get("callbackId")
    return await _stored(request, "AMD callback", lambda: calls.on_amd(params, callback_id))
