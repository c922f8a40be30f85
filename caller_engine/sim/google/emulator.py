"""The Google emulator: OAuth token endpoint, Calendar v3 and Gmail v1 on one aiohttp app.

The real `google-api-python-client` talks to it through GOOGLE_TOKEN_URI (`{url}/token`) and
GOOGLE_API_BASE_URL (`{url}`). Every request is recorded. Faults are injected per API
(`token`, `calendar`, `gmail`) with `fail_next` (Google-shaped error JSON) and `delay_next`;
`hold_freebusy(n)` makes the next n freebusy queries wait for each other, to stage races.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from caller_engine.sim.google.auth import Grant, GrantRefused, TokenIssuer
from caller_engine.sim.google.calendar import CalendarApi, EmulatedCalendar
from caller_engine.sim.google.errors import api_error, insufficient_scopes, oauth_error
from caller_engine.sim.google.gmail import GmailApi, SentMessage

ApiName = Literal["token", "calendar", "gmail"]
OAUTH_ERRORS = {
    400: "invalid_request",
    401: "unauthorized_client",
    403: "access_denied",
    429: "rate_limit_exceeded",
    500: "internal_failure",
    503: "temporarily_unavailable",
}


@dataclass(frozen=True)
class RecordedRequest:
    api: ApiName | None
    method: str
    path: str
    query: Mapping[str, str]
    body: bytes


@dataclass
class Fault:
    status: int
    reason: str | None = None
    message: str | None = None
    match: str | None = None  # only requests whose "METHOD path" contains this

    def applies(self, request: web.Request) -> bool:
        return self.match is None or self.match in f"{request.method} {request.path}"


@dataclass
class _Plan:
    faults: list[Fault] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)


def api_of(path: str) -> ApiName | None:
    if path == "/token":
        return "token"
    if path.startswith("/calendar/"):
        return "calendar"
    if path.startswith("/gmail/"):
        return "gmail"
    return None


class GoogleEmulator:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.tokens = TokenIssuer(clock)
        self.calendars: dict[str, EmulatedCalendar] = {}
        self.sent: list[SentMessage] = []
        self.requests: list[RecordedRequest] = []
        self._plans: dict[ApiName, _Plan] = {
            "token": _Plan(),
            "calendar": _Plan(),
            "gmail": _Plan(),
        }
        self._barrier: asyncio.Barrier | None = None
        self._barrier_left = 0

    # -- setup -------------------------------------------------------------------------

    def add_service_account(
        self,
        client_email: str,
        public_key: rsa.RSAPublicKey | str | bytes,
        *,
        delegated_scopes: Iterable[str] = (),
    ) -> None:
        """Register an account; `delegated_scopes` are those granted domain-wide delegation."""
        self.tokens.add_account(client_email, public_key, delegated_scopes)

    def add_calendar(
        self,
        calendar_id: str,
        *,
        timezone: str = "UTC",
        share_with: Mapping[str, str] | Iterable[str] = (),
    ) -> EmulatedCalendar:
        """A calendar shared with principals (`{email: role}`, or emails as writers)."""
        calendar = EmulatedCalendar(calendar_id, timezone)
        roles = (
            share_with if isinstance(share_with, Mapping) else dict.fromkeys(share_with, "writer")
        )
        for principal, role in roles.items():
            calendar.share(principal, role)
        self.calendars[calendar_id] = calendar
        return calendar

    def fail_next(
        self,
        api: ApiName,
        status: int,
        *,
        times: int = 1,
        reason: str | None = None,
        message: str | None = None,
        match: str | None = None,
    ) -> None:
        """Answer the next `times` requests to `api` with a Google-shaped error.

        `match` narrows the fault to requests whose "METHOD /path" contains it, e.g.
        `"POST /calendar/v3/calendars/"` for event inserts only.
        """
        fault = Fault(status, reason, message, match)
        self._plans[api].faults.extend([fault] * times)

    def delay_next(self, api: ApiName, seconds: float, *, times: int = 1) -> None:
        self._plans[api].delays.extend([seconds] * times)

    def hold_freebusy(self, parties: int) -> None:
        """The next `parties` freebusy queries answer only once all of them have arrived."""
        self._barrier = asyncio.Barrier(parties)
        self._barrier_left = parties

    def calls(self, api: ApiName, method: str | None = None, suffix: str = "") -> int:
        """How many requests reached `api` (optionally by method and path ending)."""
        return sum(
            1
            for r in self.requests
            if r.api == api and (method is None or r.method == method) and r.path.endswith(suffix)
        )

    # -- application -------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/token", self._token)
        CalendarApi(self.calendars, self._authorize, self._gate).routes(app)
        GmailApi(self.sent, self._authorize).routes(app)
        return app

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        api = api_of(request.path)
        body = await request.read()
        self.requests.append(
            RecordedRequest(api, request.method, request.path, dict(request.query), body)
        )
        if api is not None:
            plan = self._plans[api]
            if plan.delays:
                await asyncio.sleep(plan.delays.pop(0))
            fault = next((f for f in plan.faults if f.applies(request)), None)
            if fault is not None:
                plan.faults.remove(fault)
                if api == "token":
                    error = fault.reason or OAUTH_ERRORS.get(fault.status, "invalid_request")
                    return oauth_error(fault.status, error, fault.message or error)
                return api_error(fault.status, fault.reason, fault.message)
        return await handler(request)

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        audience = str(request.url.with_query(None))
        try:
            answer = self.tokens.issue(form, audience)
        except GrantRefused as exc:
            return oauth_error(exc.status, exc.error, exc.description)
        return web.json_response(answer)

    def _authorize(self, request: web.Request, scopes: frozenset[str]) -> Grant | web.Response:
        grant = self.tokens.grant_for(request.headers.get("Authorization"))
        if grant is None:
            return api_error(
                401,
                "authError",
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
            )
        if not grant.scopes & scopes:
            return insufficient_scopes()
        return grant

    async def _gate(self) -> None:
        if self._barrier is None or self._barrier_left <= 0:
            return
        barrier = self._barrier
        self._barrier_left -= 1
        if self._barrier_left == 0:
            self._barrier = None
        await barrier.wait()
