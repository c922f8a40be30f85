"""POST /call/initiate: the orchestrator asks for a call."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import orjson
from aiohttp import web
from pydantic import ValidationError

from caller_engine.calls.models import InitiateRequest
from caller_engine.calls.service import CallConflict
from caller_engine.calls.transfer import TargetError, call_targets
from caller_engine.guardrails.policy import CallRefused
from caller_engine.telephony.rest import TelephonyError
from caller_engine.web.errors import json_error, json_response
from caller_engine.web.security import api_key_error
from caller_engine.web.state import SERVICES


def _field_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()
    ]


async def initiate(request: web.Request) -> web.Response:
    if (denied := api_key_error(request)) is not None:
        return denied
    services = request.app[SERVICES]
    if services.draining:
        return json_error(503, "draining", "server is shutting down; retry on another instance")
    if request.content_type != "application/json":
        return json_error(415, "unsupported_media_type", "send the body as application/json")
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return json_error(400, "invalid_json", f"body is not valid JSON: {exc}")
    try:
        allow_private = services.settings.result_webhook_allow_private
        req = InitiateRequest.model_validate(body, context={"allow_private": allow_private})
    except ValidationError as exc:
        return json_error(422, "invalid_request", "invalid request body", fields=_field_errors(exc))
    unknown = sorted(set(req.agent.tools or ()) - services.tool_names)
    if unknown:
        return json_error(
            422,
            "invalid_request",
            "invalid request body",
            fields=[
                {
                    "field": "agent.tools",
                    "message": f"not enabled on this deployment: {', '.join(unknown)}",
                }
            ],
        )
    provider = req.agent.provider
    if provider is not None and provider not in services.bridge.connectors:
        configured = ", ".join(services.bridge.connectors)
        return json_error(
            422,
            "invalid_request",
            "invalid request body",
            fields=[
                {
                    "field": "agent.provider",
                    "message": f"'{provider}' is not configured here (configured: {configured})",
                }
            ],
        )
    try:
        call_targets(services.settings.configured_transfer_targets, req.agent.transferTargets)
    except TargetError as exc:
        return json_error(
            422,
            "invalid_request",
            "invalid request body",
            fields=[{"field": "agent.transferTargets", "message": str(exc)}],
        )
    try:
        outcome = await services.calls.initiate(req)
    except CallRefused as refusal:
        refused = json_error(
            refusal.http_status, refusal.reason, refusal.message, **refusal.details()
        )
        if refusal.next_allowed_at is not None and refusal.reason == "frequency_cap":
            wait = (refusal.next_allowed_at - datetime.now(UTC)).total_seconds()
            refused.headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return refused
    except CallConflict as exc:
        return json_error(409, "conflict", str(exc))
    except TelephonyError as exc:
        return json_error(exc.http_status, str(exc.code), exc.message)
    record = outcome.record
    answer: dict[str, object] = {
        "success": True,
        "callSid": record.call_sid,
        "status": record.status,
    }
    if outcome.duplicate:
        answer["duplicate"] = True
    return json_response(answer)
