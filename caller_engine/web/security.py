"""Authentication of requests: the orchestrator's API key and Twilio's signatures."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from aiohttp import web
from loguru import logger
from multidict import MultiDict

from caller_engine.telephony.rest import CALLBACK_RETRY
from caller_engine.telephony.signature import twilio_signature_valid
from caller_engine.web.errors import json_error
from caller_engine.web.state import SERVICES


def api_key_error(request: web.Request) -> web.Response | None:
    """None when the request carries the API key (or none is configured)."""
    expected = request.app[SERVICES].settings.api_key
    if not expected:
        return None
    given = request.headers.get("X-API-Key")
    auth = request.headers.get("Authorization", "")
    if given is None and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if given and hmac.compare_digest(given.encode(), expected.encode()):
        return None
    logger.warning("rejected {} {}: missing or invalid API key", request.method, request.path)
    return json_error(401, "unauthorized", "missing or invalid API key (X-API-Key or Bearer)")


async def twilio_form(request: web.Request) -> MultiDict[str]:
    """The POSTed form fields (repeated keys kept, in order); empty for other methods."""
    if request.method != "POST":
        return MultiDict()
    form = await request.post()
    return MultiDict((k, v) for k, v in form.items() if isinstance(v, str))


def twilio_request_error(
    request: web.Request, params: Mapping[str, str], *, websocket: bool = False
) -> web.Response | None:
    """None when the request is signed by Twilio (or validation is off).

    The URL is rebuilt from BASE_URL, because behind a proxy the socket's URL is not
    the one Twilio signed, with the request target exactly as sent (a normalized one would
    turn the %3A of a callbackId into ':' and no longer match).
    """
    settings = request.app[SERVICES].settings
    if not settings.twilio_validate_signatures:
        return None
    path = request.raw_path
    url = settings.public_ws_url(path) if websocket else settings.public_url(path)
    signature = request.headers.get("X-Twilio-Signature")
    token = settings.twilio_auth_token
    # A URL we gave with connection overrides may be signed with its fragment (not sent).
    urls = (url,) if websocket else (url, url + CALLBACK_RETRY)
    if twilio_signature_valid(token, urls, params, signature):
        return None
    resource = request.match_info.route.resource
    endpoint = resource.canonical if resource is not None else request.path
    request.app[SERVICES].metrics.signature_failures.labels(endpoint).inc()
    logger.bind(callSid=params.get("CallSid", "-")).warning(
        "rejected {} {}: {} Twilio signature",
        request.method,
        request.path,
        "missing" if not signature else "invalid",
    )
    return web.Response(status=403, text="invalid Twilio signature\n")
