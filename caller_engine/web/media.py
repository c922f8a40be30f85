"""WS /media-stream[/{callbackId}]: Twilio's bidirectional Media Stream."""

from __future__ import annotations

from aiohttp import web

from caller_engine.web.security import twilio_request_error
from caller_engine.web.state import SERVICES

MAX_FRAME_BYTES = 64 * 1024


async def media_stream(request: web.Request) -> web.StreamResponse:
    """Signed upgrade only; the stream's own token is checked at `start` by the session."""
    if (denied := twilio_request_error(request, {}, websocket=True)) is not None:
        return denied
    ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES, autoping=True)
    await ws.prepare(request)
    await request.app[SERVICES].bridge.handle(ws, request.match_info.get("callbackId"))
    return ws
