"""Emulator of Twilio's REST API (2010-04-01 Calls and Messages), as a REST client sees it.

It checks HTTP basic auth against the account, validates like Twilio (E.164 numbers, magic
unreachable test numbers, body limits), answers Twilio-shaped JSON and error JSON, and
records every request. Hooks let the phone-network simulation react to created and updated
calls. Failures can be injected with `fail_next`.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import orjson
from aiohttp import web
from multidict import MultiDict

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
# Twilio's magic test numbers: https://www.twilio.com/docs/iam/test-credentials
UNREACHABLE = {"+15005550001": 21211, "+15005550002": 21612, "+15005550003": 21214}
TERMINAL = {"completed", "busy", "failed", "no-answer", "canceled"}


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass
class RecordedRequest:
    method: str
    path: str
    form: MultiDict[str]


@dataclass
class EmulatedCall:
    sid: str
    to: str
    from_: str
    form: MultiDict[str]
    status: str = "queued"
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # The form of the latest update (POST Calls/{sid}.json) the network has to act on.
    last_update: MultiDict[str] = field(default_factory=MultiDict)

    @property
    def url(self) -> str:
        return self.form.get("Url", "")

    def get(self, name: str, default: str = "") -> str:
        return self.form.get(name, default)


@dataclass
class EmulatedMessage:
    sid: str
    to: str
    from_: str
    body: str
    status: str = "queued"


CallHook = Callable[[EmulatedCall], Awaitable[None] | None]


def twilio_error(status: int, code: int, message: str) -> web.Response:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


class TwilioRestEmulator:
    def __init__(self, account_sid: str, auth_token: str) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.calls: dict[str, EmulatedCall] = {}
        self.messages: list[EmulatedMessage] = []
        self.requests: list[RecordedRequest] = []
        self.fail_next: list[tuple[int, int, str]] = []
        self.on_call_created: list[CallHook] = []
        self.on_call_updated: list[CallHook] = []

    # -- application -------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        base = "/2010-04-01/Accounts/{account}"
        app.router.add_post(base + "/Calls.json", self._create_call)
        app.router.add_post(base + "/Calls/{sid}.json", self._update_call)
        app.router.add_get(base + "/Calls/{sid}.json", self._fetch_call)
        app.router.add_post(base + "/Messages.json", self._create_message)
        return app

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == self.account_sid and password == self.auth_token

    async def _begin(self, request: web.Request) -> tuple[MultiDict[str], web.Response | None]:
        form = MultiDict((k, str(v)) for k, v in (await request.post()).items())
        self.requests.append(RecordedRequest(request.method, request.path, form))
        if not self._authorized(request) or request.match_info["account"] != self.account_sid:
            return form, twilio_error(401, 20003, "Authenticate")
        if self.fail_next:
            status, code, message = self.fail_next.pop(0)
            return form, twilio_error(status, code, message)
        return form, None

    async def _run_hooks(self, hooks: list[CallHook], call: EmulatedCall) -> None:
        for hook in hooks:
            result = hook(call)
            if result is not None:
                await result

    # -- calls -------------------------------------------------------------------------

    async def _create_call(self, request: web.Request) -> web.Response:
        form, error = await self._begin(request)
        if error:
            return error
        to, from_ = form.get("To", ""), form.get("From", "")
        if not form.get("Url") and not form.get("Twiml"):
            return twilio_error(400, 21205, "Url parameter is required.")
        if not E164.match(to):
            return twilio_error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if not E164.match(from_):
            return twilio_error(400, 21212, f"Invalid 'From' Phone Number: {from_}")
        if to in UNREACHABLE:
            code = UNREACHABLE[to]
            return twilio_error(400, code, f"The 'To' number {to} is not reachable ({code}).")
        call = EmulatedCall(new_sid("CA"), to, from_, form)
        self.calls[call.sid] = call
        await self._run_hooks(self.on_call_created, call)
        return self._call_json(call, 201)

    async def _update_call(self, request: web.Request) -> web.Response:
        form, error = await self._begin(request)
        if error:
            return error
        call = self.calls.get(request.match_info["sid"])
        if call is None or call.status in TERMINAL:
            return twilio_error(404, 20404, f"The requested resource {request.path} was not found")
        status = form.get("Status")
        if status is not None and status not in ("completed", "canceled"):
            return twilio_error(400, 21218, f"Invalid Status: {status}")
        redirect = status is None and (form.get("Twiml") or form.get("Url"))
        if redirect and call.status != "in-progress":
            return twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.")
        limit = form.get("TimeLimit")
        if limit is not None and (not limit.isdigit() or not 60 <= int(limit) <= 86_400):
            # Twilio allows one minute to 24 hours; the error code here is not confirmed.
            return twilio_error(400, 20001, f"Invalid TimeLimit: {limit}")
        if status in ("completed", "canceled"):
            call.status = status
        call.last_update = form
        await self._run_hooks(self.on_call_updated, call)
        return self._call_json(call, 200)

    async def _fetch_call(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return twilio_error(401, 20003, "Authenticate")
        call = self.calls.get(request.match_info["sid"])
        if call is None:
            return twilio_error(404, 20404, f"The requested resource {request.path} was not found")
        return self._call_json(call, 200)

    def _call_json(self, call: EmulatedCall, status: int) -> web.Response:
        body: dict[str, Any] = {
            "sid": call.sid,
            "account_sid": self.account_sid,
            "to": call.to,
            "from": call.from_,
            "status": call.status,
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "date_created": format_datetime(call.created_at),
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Calls/{call.sid}.json",
        }
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")

    # -- messages ----------------------------------------------------------------------

    async def _create_message(self, request: web.Request) -> web.Response:
        form, error = await self._begin(request)
        if error:
            return error
        to, from_, body = form.get("To", ""), form.get("From", ""), form.get("Body", "")
        if not E164.match(to):
            return twilio_error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if not body:
            return twilio_error(400, 21602, "Message body is required.")
        if len(body) > 1600:
            return twilio_error(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        message = EmulatedMessage(new_sid("SM"), to, from_, body)
        self.messages.append(message)
        payload = {
            "sid": message.sid,
            "account_sid": self.account_sid,
            "to": to,
            "from": from_,
            "body": body,
            "status": message.status,
            "num_segments": str(len(body) // 153 + 1),
            "direction": "outbound-api",
            "api_version": "2010-04-01",
        }
        return web.Response(status=201, body=orjson.dumps(payload), content_type="application/json")
