"""POST /twiml/transfer/{whisper,screen,done}: Twilio's requests during a transfer.

- whisper: the person being dialed answered; what they hear before being bridged.
- screen: the digit they pressed at the whisper (1 accepts; anything else declines).
- done: the `<Dial>` action: how the dial ended. Connected calls are over when it comes
  (the person hung up): `<Hangup/>`. Otherwise the caller goes back to the agent on a new
  media stream of the same call.

Each is signed by Twilio like every webhook and carries the call's callbackId and a
per-call token in its URL; the CallSid (or, on the person's leg, ParentCallSid) must be the
call's.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from caller_engine.calls.models import CallRecord
from caller_engine.logging import call_logger
from caller_engine.telephony import twiml
from caller_engine.telephony.signature import stream_token, transfer_token_valid
from caller_engine.web.security import twilio_form, twilio_request_error
from caller_engine.web.state import SERVICES


def _xml(body: str) -> web.Response:
    return web.Response(text=body, content_type="text/xml")


async def _authorized(
    request: web.Request, *, child_leg: bool
) -> tuple[Mapping[str, str], CallRecord] | web.Response:
    params = await twilio_form(request)
    if (denied := twilio_request_error(request, params)) is not None:
        return denied
    services = request.app[SERVICES]
    callback_id = request.query.get("callbackId", "")
    token = request.query.get("token", "")
    record = await services.store.get(callback_id) if callback_id else None
    call_sid = params.get("ParentCallSid" if child_leg else "CallSid", "")
    valid = (
        record is not None
        and record.call_sid is not None
        and record.call_sid == call_sid
        and transfer_token_valid(services.settings.stream_secret, call_sid, callback_id, token)
    )
    if not valid or record is None:
        call_logger(callback_id or None, call_sid or None).warning(
            "rejected {}: the transfer token or call does not match", request.path
        )
        return web.Response(status=403, text="invalid transfer token\n")
    return params, record


async def whisper(request: web.Request) -> web.Response:
    checked = await _authorized(request, child_leg=True)
    if isinstance(checked, web.Response):
        return checked
    _, record = checked
    services = request.app[SERVICES]
    transfer = record.transfer
    if transfer is None or transfer.final:
        return _xml(twiml.hangup())
    settings = services.settings
    summary = transfer.summary.rstrip(". ")
    prompt = f"Call from Caller Engine for {settings.business_name}: {summary}. Press 1 to accept."
    assert record.call_sid is not None
    screen = services.bridge.handoffs.screen_url(record.call_sid, record.callback_id)
    return _xml(twiml.whisper(prompt, screen, settings.transfer_whisper_timeout))


async def screen(request: web.Request) -> web.Response:
    checked = await _authorized(request, child_leg=True)
    if isinstance(checked, web.Response):
        return checked
    params, record = checked
    log = call_logger(record.callback_id, record.call_sid)
    if params.get("Digits") == "1":
        if await request.app[SERVICES].bridge.handoffs.accepted(record):
            return _xml(twiml.empty())  # the whisper ends: Twilio bridges the two
        log.info("the transfer target accepted, but the transfer is over")
        return _xml(twiml.hangup())
    log.info("the transfer target pressed {!r}: declined", params.get("Digits", ""))
    return _xml(twiml.hangup())


async def done(request: web.Request) -> web.Response:
    checked = await _authorized(request, child_leg=False)
    if isinstance(checked, web.Response):
        return checked
    params, record = checked
    services = request.app[SERVICES]
    transfer = await services.bridge.handoffs.dial_ended(
        record, params.get("DialCallStatus", "failed")
    )
    if transfer is None or transfer.status == "connected" or record.is_final:
        return _xml(twiml.hangup())
    call_sid = params.get("CallSid", "")
    callback_id = record.callback_id
    await services.bridge.prewarm(callback_id, call_sid)
    token = stream_token(services.settings.stream_secret, call_sid, callback_id)
    stream_url = services.settings.public_ws_url("/media-stream")
    call_logger(callback_id, call_sid).info("back to the agent on a new stream")
    return _xml(twiml.connect_stream(stream_url, {"callbackId": callback_id, "token": token}))
