"""Google-shaped error answers: API errors (Calendar v3 / Gmail v1) and OAuth token errors."""

from __future__ import annotations

import orjson
from aiohttp import web

# status → (reason, message, canonical status) used when an error is injected on demand.
DEFAULTS: dict[int, tuple[str, str, str]] = {
    400: ("badRequest", "Bad Request", "INVALID_ARGUMENT"),
    401: ("authError", "Invalid Credentials", "UNAUTHENTICATED"),
    403: ("forbidden", "Forbidden", "PERMISSION_DENIED"),
    404: ("notFound", "Not Found", "NOT_FOUND"),
    409: ("duplicate", "The requested identifier already exists.", "ALREADY_EXISTS"),
    410: ("deleted", "Resource has been deleted", "NOT_FOUND"),
    429: ("rateLimitExceeded", "Rate Limit Exceeded", "RESOURCE_EXHAUSTED"),
    500: ("backendError", "Backend Error", "INTERNAL"),
    503: ("backendError", "Service Unavailable", "UNAVAILABLE"),
}


def api_error(
    status: int,
    reason: str | None = None,
    message: str | None = None,
    *,
    domain: str = "global",
) -> web.Response:
    """`{"error": {"code", "message", "errors": [{"domain", "reason", "message"}], "status"}}`."""
    default_reason, default_message, canonical = DEFAULTS.get(
        status, ("unknown", "Error", "UNKNOWN")
    )
    reason = reason or default_reason
    message = message or default_message
    body = {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"domain": domain, "reason": reason, "message": message}],
            "status": canonical,
        }
    }
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/"'
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def insufficient_scopes() -> web.Response:
    return api_error(
        403, "insufficientPermissions", "Request had insufficient authentication scopes."
    )


def oauth_error(status: int, error: str, description: str) -> web.Response:
    """The token endpoint's `{"error", "error_description"}` answer."""
    body = {"error": error, "error_description": description}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")
