"""Twilio's REST API (2010-04-01: Calls and Messages) over one aiohttp session.

Three requests are all a call needs: create a call, update it (hang up, redirect to new
TwiML) and send an SMS. They are form posts with HTTP basic auth, answered with JSON, and an
error is JSON with Twilio's `code`, `message` and `status`. Made here directly rather than
through the twilio SDK's REST client, which loads its whole API tree (about 12 MB of the
server's memory with the `requests` stack it imports) and builds each request through
several layers; the SDK still provides TwiML and request validation. The form fields are
the SDK's, byte for byte. `TWILIO_API_BASE_URL` points it at a regional endpoint, a proxy
or an emulator.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from caller_engine.failures import describe

API_BASE_URL = "https://api.twilio.com"
HEADERS = {"Accept": "application/json", "Accept-Charset": "utf-8", "User-Agent": "caller-engine"}
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]
# Twilio's webhook connection overrides (a URL fragment Twilio reads and does not send):
# retry up to 5 times on a 5xx answer, a connect timeout or a read timeout. Status and AMD
# callbacks are answered 503 while they cannot be stored, so Twilio sends them again.
CALLBACK_RETRY = "#rc=5&rp=5xx,ct,rt"


class TelephonyError(Exception):
    """A Twilio failure in a form our handlers can answer with.

    `http_status` is what *we* answer: 400 when Twilio refused the request (bad or
    unreachable number), 502 when Twilio itself failed or could not be reached.
    """

    def __init__(self, code: int | str, message: str, http_status: int) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status


@dataclass(frozen=True, slots=True)
class CreatedCall:
    sid: str
    status: str


@dataclass(frozen=True, slots=True)
class CallRequest:
    to: str
    twiml_url: str
    status_callback: str
    amd_callback: str
    time_limit: int
    record: bool


class _Refused(Exception):
    """Twilio answered with an error."""

    def __init__(self, status: int, code: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _refusal(status: int, body: bytes) -> _Refused:
    try:
        error = orjson.loads(body)
    except orjson.JSONDecodeError:
        error = None
    if not isinstance(error, dict):
        return _Refused(status, None, f"Twilio answered HTTP {status}")
    code = error.get("code")
    message = error.get("message") or error.get("detail") or f"Twilio answered HTTP {status}"
    return _Refused(status, code if isinstance(code, int) else None, str(message))


def _translate(exc: Exception) -> TelephonyError:
    if isinstance(exc, _Refused):
        status = 400 if 400 <= exc.status < 500 and exc.status not in (401, 403, 429) else 502
        return TelephonyError(exc.code or exc.status, exc.message, status)
    if isinstance(exc, aiohttp.ClientError | TimeoutError | OSError):
        return TelephonyError("unreachable", f"Twilio could not be reached: {describe(exc)}", 502)
    return TelephonyError("unexpected", "the Twilio client failed unexpectedly", 502)


def _gone(exc: _Refused) -> bool:
    return exc.status == 404 or exc.code == 20404


class TwilioGateway:
    """Place, change and end calls and send SMS. `close()` on exit."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        from_number: str,
        *,
        base_url: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        root = (base_url or API_BASE_URL).rstrip("/")
        self._account_url = f"{root}/2010-04-01/Accounts/{account_sid}"
        credentials = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self._headers = {**HEADERS, "Authorization": "Basic " + credentials}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self.from_number = from_number

    async def _post(self, path: str, form: Sequence[tuple[str, str]]) -> dict[str, Any]:
        """POST a form to the account's resource `path`; its JSON, or _Refused."""
        if self._session is None:  # created inside the running loop, on first use
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        async with self._session.post(
            self._account_url + path, data=list(form), allow_redirects=False
        ) as resp:
            body = await resp.read()
            if resp.status >= 400:
                raise _refusal(resp.status, body)
        answer = orjson.loads(body)
        if not isinstance(answer, dict):
            raise ValueError("Twilio's answer is not a JSON object")
        return answer

    async def create_call(self, req: CallRequest) -> CreatedCall:
        form = [
            ("To", req.to),
            ("From", self.from_number),
            ("Url", req.twiml_url),
            ("Method", "POST"),
            ("StatusCallback", req.status_callback),
            *(("StatusCallbackEvent", event) for event in STATUS_EVENTS),
            ("StatusCallbackMethod", "POST"),
            ("TimeLimit", str(req.time_limit)),
            ("Record", "true" if req.record else "false"),
            ("MachineDetection", "Enable"),
            ("AsyncAmd", "true"),
            ("AsyncAmdStatusCallback", req.amd_callback),
            ("AsyncAmdStatusCallbackMethod", "POST"),
        ]
        try:
            call = await self._post("/Calls.json", form)
        except Exception as exc:
            raise _translate(exc) from exc
        return CreatedCall(sid=str(call.get("sid")), status=str(call.get("status")))

    async def _update(self, call_sid: str, form: Sequence[tuple[str, str]]) -> bool:
        """False when Twilio says the call is already gone (404 / 20404)."""
        try:
            await self._post(f"/Calls/{call_sid}.json", form)
        except _Refused as exc:
            if _gone(exc):
                return False
            raise _translate(exc) from exc
        except Exception as exc:
            raise _translate(exc) from exc
        return True

    async def hangup(self, call_sid: str) -> bool:
        """End a call. False when Twilio says it is already gone."""
        return await self._update(call_sid, [("Status", "completed")])

    async def redirect(self, call_sid: str, twiml: str, *, time_limit: int | None = None) -> bool:
        """Replace what a live call is doing with new TwiML (its media stream ends), and
        optionally its TimeLimit. False when Twilio says the call is already gone."""
        form = [("Twiml", twiml)]
        if time_limit is not None:
            form.append(("TimeLimit", str(time_limit)))
        return await self._update(call_sid, form)

    async def send_sms(self, to: str, body: str) -> str:
        form = [("To", to), ("From", self.from_number), ("Body", body)]
        try:
            message = await self._post("/Messages.json", form)
        except Exception as exc:
            raise _translate(exc) from exc
        return str(message.get("sid"))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
