"""Google Calendar and Gmail through google-api-python-client, off the event loop.

One service-account credentials object per API is built once and reused (access tokens are
cached on it and refreshed under a lock). The client library is synchronous and not
thread-safe, so every request runs in a worker thread of a small dedicated pool with its own
`httplib2.Http` (socket timeout) wrapped in an `AuthorizedHttp`. Service objects come from the
discovery documents shipped with the package (static discovery, no network).

`GOOGLE_API_BASE_URL` and `GOOGLE_TOKEN_URI` point the real client at another endpoint, such
as the emulator in `caller_engine.sim.google`. Every failure surfaces as `GoogleApiError`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import google_auth_httplib2
import httplib2
import orjson
from google.auth import exceptions as auth_exceptions
from google.oauth2 import service_account
from googleapiclient import discovery
from googleapiclient.errors import HttpError
from loguru import logger

from caller_engine.config import ConfigError, Settings
from caller_engine.failures import describe
from caller_engine.tools.google_errors import GoogleApiError

__all__ = ["CALENDAR_SCOPES", "GMAIL_SCOPES", "GoogleApiError", "GoogleApis"]

CALENDAR_SCOPES = (
    "https://www.googleapis.com/auth/calendar.events",
    "https://www.googleapis.com/auth/calendar.freebusy",
)
GMAIL_SCOPES = ("https://www.googleapis.com/auth/gmail.send",)
ApiName = Literal["calendar", "gmail"]

# Given the service object (a googleapiclient Resource), build one request.
RequestBuilder = Callable[[Any], Any]


def from_http_error(exc: HttpError) -> GoogleApiError:
    status = int(exc.resp.status)
    reason, message = "", str(exc.reason or "")
    try:
        error = orjson.loads(exc.content).get("error", {})
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        error = {}
    if isinstance(error, dict):
        details = error.get("errors") or [{}]
        first = details[0] if isinstance(details, list) and isinstance(details[0], dict) else {}
        reason = str(first.get("reason") or error.get("status") or "")
        message = str(error.get("message") or message)
    return GoogleApiError(status, reason or str(status), message or "HTTP error")


def from_refresh_error(exc: auth_exceptions.RefreshError) -> GoogleApiError:
    """A refused token request: 401 when the grant was refused, 503 when the endpoint failed."""
    status = 503 if exc.retryable else 401
    data = exc.args[1] if len(exc.args) > 1 else None
    if isinstance(data, dict):
        code = str(data.get("error") or "token_error")
        return GoogleApiError(status, code, str(data.get("error_description") or code))
    detail = str(exc.args[0]) if exc.args else "token refused"
    return GoogleApiError(status, "token_error", detail)


def _translate(exc: Exception) -> GoogleApiError:
    if isinstance(exc, GoogleApiError):
        return exc
    if isinstance(exc, HttpError):
        return from_http_error(exc)
    if isinstance(exc, auth_exceptions.RefreshError):
        return from_refresh_error(exc)
    if isinstance(exc, TimeoutError):
        return GoogleApiError(None, "timeout", "no answer in time")
    if isinstance(exc, OSError):
        return GoogleApiError(None, "unreachable", describe(exc))
    if isinstance(exc, auth_exceptions.TransportError | httplib2.HttpLib2Error):
        logger.info("Google API transport failure: {!r}", exc)
        return GoogleApiError(None, "unreachable", "the Google API could not be reached")
    logger.opt(exception=exc).warning("Google API client failed")
    return GoogleApiError(None, "client_error", "the Google API client failed unexpectedly")


@dataclass
class _Api:
    name: ApiName
    version: str
    endpoint: str | None
    credentials: service_account.Credentials
    timeout: float
    token_lock: threading.Lock = field(default_factory=threading.Lock)
    build_lock: threading.Lock = field(default_factory=threading.Lock)
    _service: Any = None

    def service(self) -> Any:
        with self.build_lock:
            if self._service is None:
                options = {"api_endpoint": self.endpoint} if self.endpoint else None
                self._service = discovery.build(
                    self.name,
                    self.version,
                    credentials=self.credentials,
                    static_discovery=True,
                    cache_discovery=False,
                    client_options=options,
                )
            return self._service

    def execute(self, build: RequestBuilder) -> dict[str, Any]:
        """Run one request on this thread with its own connection. Raises GoogleApiError."""
        try:
            http = httplib2.Http(timeout=self.timeout)
            with self.token_lock:
                if not self.credentials.valid:
                    self.credentials.refresh(google_auth_httplib2.Request(http))  # type: ignore[no-untyped-call]
            authorized = google_auth_httplib2.AuthorizedHttp(self.credentials, http=http)
            result = build(self.service()).execute(http=authorized, num_retries=0)
        except Exception as exc:
            raise _translate(exc) from exc
        return result if isinstance(result, dict) else {}


def _credentials(
    client_email: str, private_key: str, token_uri: str
) -> service_account.Credentials:
    """Unscoped credentials; derive per-API copies with `with_scopes`/`with_subject`."""
    info = {
        "type": "service_account",
        "client_email": client_email,
        "private_key": private_key.replace("\\n", "\n"),
        "token_uri": token_uri,
    }
    try:
        credentials = service_account.Credentials.from_service_account_info(info)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ConfigError(f"GOOGLE_PRIVATE_KEY: not a usable PEM private key ({exc})") from None
    return cast(service_account.Credentials, credentials)


def _scoped(
    base: service_account.Credentials, scopes: Sequence[str], subject: str | None
) -> service_account.Credentials:
    scoped = base.with_scopes(list(scopes))
    return cast(service_account.Credentials, scoped.with_subject(subject) if subject else scoped)


class GoogleApis:
    """Calendar and Gmail clients sharing one worker pool. Build once per process."""

    def __init__(
        self,
        client_email: str,
        private_key: str,
        *,
        token_uri: str = "https://oauth2.googleapis.com/token",
        api_base_url: str | None = None,
        impersonated_user: str | None = None,
        timeout: float = 8.0,
        max_workers: int = 8,
    ) -> None:
        base = api_base_url.rstrip("/") if api_base_url else None
        credentials = _credentials(client_email, private_key, token_uri)
        self.timeout = timeout
        self.impersonated_user = impersonated_user
        self._calendar = _Api(
            "calendar",
            "v3",
            f"{base}/calendar/v3/" if base else None,
            _scoped(credentials, CALENDAR_SCOPES, None),
            timeout,
        )
        self._gmail = _Api(
            "gmail",
            "v1",
            f"{base}/" if base else None,
            _scoped(credentials, GMAIL_SCOPES, impersonated_user),
            timeout,
        )
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="google-api")

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> GoogleApis:
        if not settings.google_client_email or not settings.google_private_key:
            raise ConfigError("GOOGLE_CLIENT_EMAIL and GOOGLE_PRIVATE_KEY are required")
        return cls(
            settings.google_client_email,
            settings.google_private_key,
            token_uri=settings.google_token_uri,
            api_base_url=settings.google_api_base_url,
            impersonated_user=settings.google_impersonated_user,
            **kwargs,
        )

    async def calendar(self, build: RequestBuilder) -> dict[str, Any]:
        """Run a Calendar v3 request, e.g. `lambda s: s.freebusy().query(body=...)`."""
        return await self._run(self._calendar, build)

    async def gmail(self, build: RequestBuilder) -> dict[str, Any]:
        """Run a Gmail v1 request as the impersonated user."""
        return await self._run(self._gmail, build)

    async def _run(self, api: _Api, build: RequestBuilder) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, api.execute, build)
        # The socket timeout bounds each connection; this bounds the whole exchange
        # (token refresh, name resolution, retries after a 401).
        try:
            return await asyncio.wait_for(future, self.timeout * 3)
        except TimeoutError:
            raise GoogleApiError(None, "timeout", "no answer in time") from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
