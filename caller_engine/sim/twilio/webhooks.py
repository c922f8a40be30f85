"""The requests Twilio makes to an application during a call: parameters, signing, delivery.

Parameter builders are pure. `deliver` sends one request the way Twilio does: form-encoded
POST (or GET with the parameters in the query) with `X-Twilio-Signature` computed over the
full URL (query included) and the sorted POST parameters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import parse_qsl, urlencode

import aiohttp
from yarl import URL

from caller_engine.sim.twilio.rest import EmulatedCall
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
    answers: list[int | None] = field(default_factory=list)  # every attempt (None: no answer)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class ConnectionOverrides:
    """Twilio's webhook connection overrides, from a `#rc=…&rp=…` URL fragment
    (https://www.twilio.com/docs/usage/webhooks/webhooks-connection-overrides): retry
    count (rc, 0-5, default 1), retry policy (rp: 4xx, 5xx, ct, rt or all; default ct) and
    the total time for every attempt (tt, milliseconds, at most and by default 15000)."""

    retries: int = 1
    policy: frozenset[str] = frozenset({"ct"})
    total: float = 15.0

    @classmethod
    def parse(cls, fragment: str) -> ConnectionOverrides:
        values = dict(parse_qsl(fragment))
        retries = min(max(int(values.get("rc", "1")), 0), 5)
        policy = frozenset(p.strip() for p in values.get("rp", "ct").split(",") if p.strip())
        total = min(int(values.get("tt", "15000")), 15000) / 1000
        return cls(retries, policy, total)

    def retry(self, status: int | None, timed_out: bool) -> bool:
        """Whether an attempt that ended so is tried again."""
        if "all" in self.policy:
            return status is None or status >= 400
        if status is None:
            return ("rt" if timed_out else "ct") in self.policy
        return (status >= 500 and "5xx" in self.policy) or (
            400 <= status < 500 and "4xx" in self.policy
        )


async def deliver(
    session: aiohttp.ClientSession,
    record: WebhookRecord,
    *,
    auth_token: str,
    route: Route = identity,
    limit: float = 15.0,
) -> WebhookRecord:
    """Send `record` as Twilio would and fill in the answer (Twilio's timeout is 15 s),
    retrying as the URL's connection overrides say. The fragment is not sent; the
    signature covers the URL requested."""
    target, _, fragment = record.url.partition("#")
    overrides = ConnectionOverrides.parse(fragment)
    deadline = asyncio.get_running_loop().time() + min(limit, overrides.total)
    for attempt in range(overrides.retries + 1):
        left = deadline - asyncio.get_running_loop().time()
        if attempt and left <= 0:
            break
        timed_out = await _attempt(session, record, target, auth_token, route, max(left, 0.1))
        record.answers.append(record.status)
        if record.ok or not overrides.retry(record.status, timed_out):
            break
    return record


async def _attempt(
    session: aiohttp.ClientSession,
    record: WebhookRecord,
    target: str,
    auth_token: str,
    route: Route,
    limit: float,
) -> bool:
    """One request; True when it timed out."""
    record.status, record.error, record.body = None, None, ""
    method = record.method.upper()
    if method == "GET":
        separator = "&" if "?" in target else "?"
        url = target + (separator + urlencode(record.params) if record.params else "")
        signature = sign_twilio_request(auth_token, url, {})
        data: dict[str, str] | None = None
    else:
        url = target
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
        return isinstance(exc, TimeoutError)
    return False


def webhook_method(value: str | None) -> str:
    return "GET" if (value or "").upper() == "GET" else "POST"
