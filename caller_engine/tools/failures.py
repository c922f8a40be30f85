"""Turn vendor failures into `{"error": ...}` results the agent can relay, logging the codes."""

from __future__ import annotations

from caller_engine.telephony.rest import TelephonyError
from caller_engine.tools.google_errors import GoogleApiError
from caller_engine.tools.registry import ToolContext, ToolOutput

RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"})


def refusal(message: str) -> ToolOutput:
    """A validation or business-rule refusal: nothing failed, the request cannot be done."""
    return {"error": message}


def google_message(service: str, exc: GoogleApiError) -> str:
    """What the agent can tell the caller about a failed Google request."""
    if exc.reason == "timeout":
        return f"The {service} did not answer in time. Please try again in a moment."
    if exc.status is None:
        return f"The {service} cannot be reached right now. Please try again later."
    if exc.status == 429 or exc.reason in RATE_LIMIT_REASONS:
        return f"The {service} is busy right now. Please try again in a moment."
    if exc.status == 401:
        return f"The {service} is not available right now (authorization failed)."
    if exc.status == 403:
        return f"The {service} refused the request (permission denied)."
    if exc.status == 404:
        return f"The {service} was not found or is not shared with this service."
    if exc.status >= 500:
        return f"The {service} is temporarily unavailable. Please try again later."
    return f"The {service} rejected the request: {exc.message}"


def google_failure(ctx: ToolContext, tool: str, service: str, exc: GoogleApiError) -> ToolOutput:
    ctx.log.bind(tool=tool, google_status=exc.status, google_reason=exc.reason).warning(
        "{}: Google {} {}: {}", tool, exc.status or "-", exc.reason, exc.message
    )
    return {"error": google_message(service, exc)}


def twilio_failure(ctx: ToolContext, tool: str, exc: TelephonyError) -> ToolOutput:
    ctx.log.bind(tool=tool, twilio_code=exc.code).warning(
        "{}: Twilio {}: {}", tool, exc.code, exc.message
    )
    if exc.http_status == 400:
        return {"error": f"The text message could not be sent: {exc.message}"}
    return {"error": "The text message service is not available right now. Please try later."}
