"""GET|POST /twiml/outbound: Twilio asks what to do with the answered call."""

from __future__ import annotations

from aiohttp import web

from caller_engine.calls import gate
from caller_engine.logging import call_logger
from caller_engine.telephony import twiml
from caller_engine.telephony.signature import stream_token
from caller_engine.web.security import twilio_form, twilio_request_error
from caller_engine.web.state import SERVICES


def _xml(body: str) -> web.Response:
    return web.Response(text=body, content_type="text/xml")


async def outbound(request: web.Request) -> web.Response:
    params = await twilio_form(request)
    if (denied := twilio_request_error(request, params)) is not None:
        return denied
    services = request.app[SERVICES]
    call_sid = params.get("CallSid") or request.query.get("CallSid", "")
    callback_id = request.query.get("callbackId")
    if not callback_id and call_sid:
        record = await services.calls.store.find_by_sid(call_sid)
        callback_id = record.callback_id if record else None
    log = call_logger(callback_id, call_sid)
    if not callback_id or not call_sid:
        log.warning("TwiML requested for an unknown call; answering <Hangup/>")
        return _xml(twiml.hangup())
    token = stream_token(services.settings.stream_secret, call_sid, callback_id)
    gate.priority.set(gate.URGENT)  # the call is answered: its greeting waits on this
    await services.bridge.prewarm(callback_id, call_sid)
    stream_url = services.settings.public_ws_url("/media-stream")
    log.info("TwiML served; stream at {}", stream_url)
    return _xml(twiml.connect_stream(stream_url, {"callbackId": callback_id, "token": token}))
