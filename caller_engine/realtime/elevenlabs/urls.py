"""Where a conversation is opened: the public endpoint, or a signed URL fetched with the key.

`ELEVENLABS_API_URL` (https://api.elevenlabs.io by default, a residency host, or an emulator)
is both the REST base and, with ws/wss, the WebSocket host.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
import orjson

CONVERSATION_PATH = "/v1/convai/conversation"
SIGNED_URL_PATH = "/v1/convai/conversation/get-signed-url"


class SignedUrlError(Exception):
    """The signed URL could not be had. `fatal`: the service refused (key, agent, request);
    retrying cannot help."""

    def __init__(self, message: str, *, fatal: bool) -> None:
        super().__init__(message)
        self.fatal = fatal


def websocket_base(api_url: str) -> str:
    parts = urlsplit(api_url.rstrip("/"))
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path, "", ""))


def public_url(api_url: str, agent_id: str) -> str:
    """The conversation endpoint for an agent that does not require authentication."""
    return f"{websocket_base(api_url)}{CONVERSATION_PATH}?{urlencode({'agent_id': agent_id})}"


async def signed_url(
    http: aiohttp.ClientSession, api_url: str, agent_id: str, api_key: str, *, wait: float = 5.0
) -> str:
    """`GET …/get-signed-url?agent_id=…` with `xi-api-key`; the URL must be opened within
    15 minutes (a fresh one per call)."""
    url = f"{api_url.rstrip('/')}{SIGNED_URL_PATH}"
    try:
        async with http.get(
            url,
            params={"agent_id": agent_id},
            headers={"xi-api-key": api_key},
            timeout=aiohttp.ClientTimeout(total=wait),
        ) as response:
            body = await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise SignedUrlError(f"ElevenLabs unreachable: {exc!r}", fatal=False) from exc
    if status != 200:
        detail = _detail(body)
        fatal = status in (400, 401, 403, 404, 422)
        raise SignedUrlError(
            f"ElevenLabs refused the signed URL: HTTP {status}{': ' + detail if detail else ''}",
            fatal=fatal,
        )
    try:
        signed = orjson.loads(body)["signed_url"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise SignedUrlError("ElevenLabs answered without a signed_url", fatal=False) from exc
    if not isinstance(signed, str) or urlsplit(signed).scheme not in ("ws", "wss"):
        raise SignedUrlError("ElevenLabs answered with an unusable signed_url", fatal=False)
    return signed


def _detail(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    detail = data.get("detail") if isinstance(data, dict) else None
    if isinstance(detail, dict):
        return str(detail.get("message") or detail.get("status") or "")[:200]
    if isinstance(detail, str):
        return detail[:200]
    return ""
