"""The requests Twilio makes to an application during a call: parameters, signing, delivery.

Parameter builders are pure. `deliver` sends one request the way Twilio does: form-encoded
POST (or GET with the parameters in the query) with `X-Twilio-Signature` computed over the
full URL (query included) and the sorted POST parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import urlencode

import aiohttp
from yarl import URL

from caller_engine.sim.twilio_rest import EmulatedCall
from caller_engine.telephony.signature import sign_twilio_request

API_VERSION = "2010-04-01"
USER_AGENT = "TwilioProxy/1.1"
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")

Route = Callable[[str], str]


def identity(url: str) -> str:
    return url


def rebase(public_base: str, actual_base: str) -> Route:
    """A route that sends requests for `public_base` (http(s) and ws(s)) to `actual_base`,
    like a reverse proxy in front of the application. Other URLs pass unchanged."""
    public = URL(public_base.rstrip("/"))
    actual = URL(actual_base.rstrip("/"))

    def route(url: str) -> str:
        target = URL(url, encoded=True)
        if target.host != public.host or target.explicit_port != public.explicit_port:
            return url
        scheme = actual.scheme
        if target.scheme in ("ws", "wss"):
            scheme = "wss" if actual.scheme == "https" else "ws"
        rebuilt = target.with_scheme(scheme).with_host(actual.host or "127.0.0.1")
        return str(rebuilt.with_port(actual.explicit_port))

    return route


def now_rfc2822() -> str:
    return format_datetime(datetime.now(UTC))


def call_params(call: EmulatedCall, account_sid: str, call_status: str) -> dict[str, str]:
    """What Twilio sends about a call in every voice webhook."""
    return {
        "AccountSid": account_sid,
        "ApiVersion": API_VERSION,
        "CallSid": call.sid,
        "CallStatus": call_status,
        "Called": call.to,
        "Caller": call.from_,
        "Direction": "outbound-api",
        "From": call.from_,
        "To": call.to,
    }


def status_params(
    call: EmulatedCall,
    account_sid: str,
    call_status: str,
    sequence: int,
    *,
    duration: int | None = None,
    sip_response_code: int | None = None,
) -> dict[str, str]:
    """A status callback (StatusCallback / StatusCallbackEvent)."""
    params = call_params(call, account_sid, call_status)
    params.update(
        {
            "CallbackSource": "call-progress-events",
            "SequenceNumber": str(sequence),
            "Timestamp": now_rfc2822(),
        }
    )
    if duration is not None:
        params["CallDuration"] = str(duration)
    if sip_response_code is not None:
        params["SipResponseCode"] = str(sip_response_code)
    return params


def amd_params(
    call: EmulatedCall, account_sid: str, answered_by: str, duration_ms: int
) -> dict[str, str]:
    """The asynchronous answering-machine-detection callback (AsyncAmdStatusCallback)."""
    return {
        "AccountSid": account_sid,
        "AnsweredBy": answered_by,
        "CallSid": call.sid,
        "MachineDetectionDuration": str(duration_ms),
    }


def requested_events(call: EmulatedCall) -> frozenset[str]:
    """The StatusCallbackEvent values asked for; Twilio sends only `completed` by default."""
    events = {e.strip().lower() for e in call.form.getall("StatusCallbackEvent", [])}
    for value in list(events):  # the SDK may also send one space-separated value
        events.update(value.split())
    return frozenset(events & set(STATUS_EVENTS)) or frozenset({"completed"})


@dataclass
class WebhookRecord:
    """One request the network made, and how the application answered it."""

    kind: str  # "status", "amd", "twiml"
    method: str
    url: str
    params: dict[str, str]
    sent_at: float
    status: int | None = None
    body: str = ""
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


async def deliver(
    session: aiohttp.ClientSession,
    record: WebhookRecord,
    *,
    auth_token: str,
    route: Route = identity,
    limit: float = 15.0,
) -> WebhookRecord:
    """Send `record` as Twilio would and fill in the answer (Twilio's timeout is 15 s)."""
    method = record.method.upper()
    if method == "GET":
        separator = "&" if "?" in record.url else "?"
        url = record.url + (separator + urlencode(record.params) if record.params else "")
        signature = sign_twilio_request(auth_token, url, {})
        data: dict[str, str] | None = None
    else:
        url = record.url
        signature = sign_twilio_request(auth_token, url, record.params)
        data = record.params
    headers = {"X-Twilio-Signature": signature, "User-Agent": USER_AGENT}
    record.headers = headers
    try:
        async with session.request(
            method,
            URL(route(url), encoded=True),
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=limit),
        ) as resp:
            record.status = resp.status
            record.body = await resp.text()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        record.error = repr(exc)
    return record


def webhook_method(value: str | None) -> str:
    return "GET" if (value or "").upper() == "GET" else "POST"
