"""Error answers and the middleware that keeps tracebacks out of responses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from loguru import logger

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def json_error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message, **extra}
    return json_response({"success": False, "error": error}, status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        code = exc.reason.lower().replace(" ", "_")
        return json_error(exc.status, code, exc.text or exc.reason)
    except Exception:
        logger.exception("unhandled error in {} {}", request.method, request.path)
        return json_error(500, "internal_error", "internal error; see the server log")
