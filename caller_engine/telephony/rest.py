"""Twilio REST through the SDK's native asyncio client (AsyncTwilioHttpClient on aiohttp).

`TWILIO_API_BASE_URL` points the real SDK at a regional endpoint, a proxy or an emulator.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from caller_engine.failures import describe

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


def _translate(exc: Exception) -> TelephonyError:
    if isinstance(exc, TwilioRestException):
        status = 400 if 400 <= exc.status < 500 and exc.status not in (401, 403, 429) else 502
        return TelephonyError(exc.code or exc.status, exc.msg or "Twilio error", status)
    if isinstance(exc, aiohttp.ClientError | TimeoutError | OSError):
        return TelephonyError("unreachable", f"Twilio could not be reached: {describe(exc)}", 502)
    return TelephonyError("unexpected", "the Twilio client failed unexpectedly", 502)


class TwilioGateway:
    """Place and end calls and send SMS. Create inside the running loop; `close()` on exit."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        from_number: str,
        *,
        base_url: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._http = AsyncTwilioHttpClient(timeout=timeout)
        self._client = Client(account_sid, auth_token, http_client=self._http)
        if base_url:
            self._client.api.base_url = base_url.rstrip("/")
        self.from_number = from_number

    async def create_call(self, req: CallRequest) -> CreatedCall:
        try:
            call = await self._client.calls.create_async(
                to=req.to,
                from_=self.from_number,
                url=req.twiml_url,
                method="POST",
                status_callback=req.status_callback,
                status_callback_event=STATUS_EVENTS,
                status_callback_method="POST",
                time_limit=req.time_limit,
                record=req.record,
                machine_detection="Enable",
                async_amd="true",
                async_amd_status_callback=req.amd_callback,
                async_amd_status_callback_method="POST",
            )
        except Exception as exc:
            raise _translate(exc) from exc
        return CreatedCall(sid=str(call.sid), status=str(call.status))

    async def hangup(self, call_sid: str) -> bool:
        """End a call. False when Twilio says it is already gone (404 / 20404)."""
        try:
            await self._client.calls(call_sid).update_async(status="completed")
        except TwilioRestException as exc:
            if exc.status == 404 or exc.code == 20404:
                return False
            raise _translate(exc) from exc
        except Exception as exc:
            raise _translate(exc) from exc
        return True

    async def redirect(self, call_sid: str, twiml: str, *, time_limit: int | None = None) -> bool:
        """Replace what a live call is doing with new TwiML (its media stream ends), and
        optionally its TimeLimit. False when Twilio says the call is already gone."""
        try:
            if time_limit is None:
                await self._client.calls(call_sid).update_async(twiml=twiml)
            else:
                await self._client.calls(call_sid).update_async(twiml=twiml, time_limit=time_limit)
        except TwilioRestException as exc:
            if exc.status == 404 or exc.code == 20404:
                return False
            raise _translate(exc) from exc
        except Exception as exc:
            raise _translate(exc) from exc
        return True

    async def send_sms(self, to: str, body: str) -> str:
        try:
            message = await self._client.messages.create_async(
                to=to, from_=self.from_number, body=body
            )
        except Exception as exc:
            raise _translate(exc) from exc
        return str(message.sid)

    async def close(self) -> None:
        await self._http.close()
