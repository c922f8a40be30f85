"""One delivery attempt: POST the result with its signature and idempotency key."""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp
from loguru import logger

from caller_engine.failures import describe
from caller_engine.results.destinations import ForbiddenAddress
from caller_engine.results.signing import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    signature_header,
)

USER_AGENT = "caller-engine-results/1"
MAX_ERROR_BODY = 300


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST produced: an HTTP status, or None with the network error."""

    status: int | None
    error: str
    retry_after: str | None = None
    refused: bool = False  # not sent: the destination is not allowed; never retried


def headers_for(callback_id: str, body: bytes, secret: str | None, now: float) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        IDEMPOTENCY_HEADER: callback_id,
    }
    if secret:
        headers[SIGNATURE_HEADER] = signature_header(secret, int(now), body)
    return headers


async def post_result(
    session: aiohttp.ClientSession,
    url: str,
    callback_id: str,
    body: bytes,
    *,
    secret: str | None,
    request_timeout: float,
) -> Attempt:
    headers = headers_for(callback_id, body, secret, time.time())
    try:
        async with session.post(
            url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=request_timeout),
            allow_redirects=False,
        ) as resp:
            text = (await resp.text(errors="replace"))[:MAX_ERROR_BODY]
            error = "" if 200 <= resp.status < 300 else f"HTTP {resp.status}: {text}".strip()
            if 300 <= resp.status < 400:
                error = f"HTTP {resp.status} redirect to {resp.headers.get('Location', '?')}"
            return Attempt(resp.status, error, resp.headers.get("Retry-After"))
    except TimeoutError:
        return Attempt(None, f"timed out after {request_timeout:g} s")
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, ForbiddenAddress):
            return Attempt(None, str(exc.os_error), refused=True)
        logger.bind(callbackId=callback_id).info("result delivery to {} failed: {!r}", url, exc)
        return Attempt(None, describe(exc))
    except (aiohttp.ClientError, OSError) as exc:
        logger.bind(callbackId=callback_id).info("result delivery to {} failed: {!r}", url, exc)
        return Attempt(None, describe(exc))
