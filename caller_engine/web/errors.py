"""Error answers and the middleware that keeps tracebacks out of responses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from loguru import logger

from caller_engine.calls.availability import StoreUnavailable

RETRY_AFTER_S = 5

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def json_error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message, **extra}
    return json_response({"success": False, "error": error}, status)


def _sentence(request: web.Request, exc: web.HTTPException) -> str:
    """aiohttp's own texts are "404: Not Found"; say it for people instead."""
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"{request.method} is not allowed on {request.path}; use {allowed}"
    if isinstance(exc, web.HTTPNotFound) and exc.text in (None, "", "404: Not Found"):
        return f"no endpoint at {request.path}"
    text = exc.text or ""
    if not text or text == f"{exc.status}: {exc.reason}":
        return exc.reason
    return text


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        code = exc.reason.lower().replace(" ", "_")
        answer = json_error(exc.status, code, _sentence(request, exc))
        for name in ("Allow", "Retry-After"):  # what the client must know to do better
            if name in exc.headers:
                answer.headers[name] = exc.headers[name]
        return answer
    except StoreUnavailable as exc:
        logger.warning("{} {}: database unavailable ({})", request.method, request.path, exc)
        answer = json_error(
            503, "database_unavailable", "the call database is unavailable; retry shortly"
        )
        answer.headers["Retry-After"] = str(RETRY_AFTER_S)
        return answer
    except Exception:
        logger.exception("unhandled error in {} {}", request.method, request.path)
        return json_error(500, "internal_error", "internal error; see the server log")
