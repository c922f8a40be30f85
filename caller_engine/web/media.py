"""WS /media-stream[/{callbackId}]: Twilio's bidirectional Media Stream."""

from __future__ import annotations

from aiohttp import WSMsgType, web

from caller_engine.logging import call_logger
from caller_engine.telephony.media_stream import MalformedFrame, Start, Stop, parse_frame
from caller_engine.telephony.signature import stream_token_valid
from caller_engine.web.security import twilio_request_error
from caller_engine.web.state import SERVICES

MAX_FRAME_BYTES = 64 * 1024
POLICY_VIOLATION = 1008


async def media_stream(request: web.Request) -> web.StreamResponse:
    if (denied := twilio_request_error(request, {}, websocket=True)) is not None:
        return denied
    services = request.app[SERVICES]
    ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES)
    await ws.prepare(request)
    log = call_logger(request.match_info.get("callbackId"))
    async for msg in ws:
        if msg.type != WSMsgType.TEXT:
            continue
        try:
            event = parse_frame(msg.data)
        except MalformedFrame as exc:
            log.warning("skipping malformed frame: {}", exc.reason)
            continue
        if isinstance(event, Start):
            callback_id = event.custom_parameters.get("callbackId", "")
            token = event.custom_parameters.get("token", "")
            log = call_logger(callback_id, event.call_sid, event.stream_sid)
            secret = services.settings.stream_secret
            if not stream_token_valid(secret, event.call_sid, callback_id, token):
                log.warning("stream token does not match its call; closing")
                await ws.close(code=POLICY_VIOLATION, message=b"invalid stream token")
                break
            log.info("stream started")
        elif isinstance(event, Stop):
            log.info("stream stopped")
            break
    await ws.close()
    return ws
