"""The Google emulator: token endpoint checks, access control, Calendar and Gmail behaviour and
Google-shaped errors, over raw HTTP and through the real client."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from caller_engine.sim.google.auth import GOOGLE_TOKEN_AUDIENCE, JWT_BEARER
from caller_engine.tools.google_client import CALENDAR_SCOPES, GMAIL_SCOPES, GoogleApiError
from tests.google_env import (
    CALENDAR_ID,
    CLIENT_EMAIL,
    MAILBOX,
    GoogleEnv,
    other_key,
    running_google,
    service_key,
)

CALENDAR = "https://www.googleapis.com/auth/calendar"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def assertion(claims: dict[str, Any], key_pem: str | None = None, alg: str = "RS256") -> str:
    key = serialization.load_pem_private_key((key_pem or service_key()[0]).encode(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    now = int(time.time())
    body = {
        "iss": CLIENT_EMAIL,
        "aud": GOOGLE_TOKEN_AUDIENCE,
        "iat": now,
        "exp": now + 3600,
        "scope": " ".join(CALENDAR_SCOPES),
        **claims,
    }
    signing_input = (
        f"{b64url(orjson.dumps({'alg': alg, 'typ': 'JWT'}))}.{b64url(orjson.dumps(body))}"
    )
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


@pytest.fixture
async def env() -> AsyncIterator[GoogleEnv]:
    async with running_google() as google_env:
        yield google_env


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def token(
    env: GoogleEnv, http: aiohttp.ClientSession, **claims: Any
) -> tuple[int, dict[str, Any]]:
    key = claims.pop("key", None)
    form = {"grant_type": claims.pop("grant_type", JWT_BEARER), "assertion": assertion(claims, key)}
    async with http.post(env.url + "/token", data=form) as response:
        return response.status, await response.json()


async def bearer(env: GoogleEnv, http: aiohttp.ClientSession, **claims: Any) -> dict[str, str]:
    status, body = await token(env, http, **claims)
    assert status == 200, body
    return {"Authorization": f"Bearer {body['access_token']}"}


async def api(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    body: Any = None,
    **params: str,
) -> tuple[int, Any]:
    async with http.request(method, url, headers=headers, json=body, params=params) as response:
        text = await response.read()
        return response.status, orjson.loads(text) if text else None


def events_url(env: GoogleEnv, calendar_id: str = CALENDAR_ID) -> str:
    return f"{env.url}/calendar/v3/calendars/{calendar_id}/events"


def event(start: str, end: str, **extra: Any) -> dict[str, Any]:
    return {
        "summary": "Test",
        "start": {"dateTime": start, "timeZone": "America/New_York"},
        "end": {"dateTime": end, "timeZone": "America/New_York"},
        **extra,
    }


# -- token endpoint --------------------------------------------------------------------


async def test_token_for_a_signed_assertion(env: GoogleEnv, http: aiohttp.ClientSession) -> None:
    status, body = await token(env, http)
    assert status == 200
    assert body["token_type"] == "Bearer" and body["expires_in"] > 3000
    grant = env.emulator.tokens.grants[body["access_token"]]
    assert grant.principal == CLIENT_EMAIL and grant.scopes == frozenset(CALENDAR_SCOPES)


@pytest.mark.parametrize(
    ("claims", "status", "error", "description"),
    [
        ({"key": other_key()[0]}, 400, "invalid_grant", "Invalid JWT Signature."),
        ({"iss": "nobody@x.iam.gserviceaccount.com"}, 400, "invalid_grant", "account not found"),
        ({"aud": "https://example.com/token"}, 400, "invalid_grant", "audience"),
        ({"iat": 1_000_000, "exp": 1_003_600}, 400, "invalid_grant", "short-lived"),
        ({"exp": int(time.time()) + 7200}, 400, "invalid_grant", "short-lived"),
        ({"scope": ""}, 400, "invalid_scope", "missing scope"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type", "password"),
        ({"sub": MAILBOX}, 401, "unauthorized_client", "not authorized"),  # calendar not delegated
    ],
)
async def test_token_refusals(
    env: GoogleEnv,
    http: aiohttp.ClientSession,
    claims: dict[str, Any],
    status: int,
    error: str,
    description: str,
) -> None:
    got_status, body = await token(env, http, **claims)
    assert got_status == status
    assert body["error"] == error and description in body["error_description"]
    assert env.emulator.tokens.grants == {}


async def test_token_refuses_a_non_rs256_assertion(
    env: GoogleEnv, http: aiohttp.ClientSession
) -> None:
    form = {"grant_type": JWT_BEARER, "assertion": assertion({}, alg="HS256")}
    async with http.post(env.url + "/token", data=form) as response:
        assert response.status == 400
        assert "RS256" in (await response.json())["error_description"]
    form["assertion"] = "not-a-jwt"
    async with http.post(env.url + "/token", data=form) as response:
        assert (await response.json())["error"] == "invalid_grant"


async def test_delegated_token_carries_the_subject(
    env: GoogleEnv, http: aiohttp.ClientSession
) -> None:
    status, body = await token(env, http, sub=MAILBOX, scope=" ".join(GMAIL_SCOPES))
    assert status == 200
    assert env.emulator.tokens.grants[body["access_token"]].principal == MAILBOX


# -- API access control ----------------------------------------------------------------


async def test_requests_without_a_valid_token_get_401(
    env: GoogleEnv, http: aiohttp.ClientSession
) -> None:
    for headers in (None, {"Authorization": "Bearer ya29.unknown"}):
        async with http.get(events_url(env), headers=headers) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            error = (await response.json())["error"]
            assert error["code"] == 401 and error["errors"][0]["reason"] == "authError"
            assert error["status"] == "UNAUTHENTICATED"


async def test_scopes_are_enforced(env: GoogleEnv, http: aiohttp.ClientSession) -> None:
    freebusy_only = await bearer(
        env, http, scope="https://www.googleapis.com/auth/calendar.freebusy"
    )
    status, body = await api(http, "GET", events_url(env), freebusy_only)
    assert status == 403 and body["error"]["errors"][0]["reason"] == "insufficientPermissions"
    gmail_only = await bearer(env, http, scope=" ".join(GMAIL_SCOPES))
    status, body = await api(
        http, "POST", env.url + "/calendar/v3/freeBusy", gmail_only, {"timeMin": "x"}
    )
    assert status == 403


async def test_calendar_sharing_is_enforced(env: GoogleEnv, http: aiohttp.ClientSession) -> None:
    auth = await bearer(env, http, scope=CALENDAR)
    env.emulator.add_calendar("private@example.com")
    status, body = await api(http, "GET", events_url(env, "private@example.com"), auth)
    assert status == 404 and body["error"]["errors"][0]["reason"] == "notFound"
    env.calendar.share(CLIENT_EMAIL, "freeBusyReader")
    status, _ = await api(http, "GET", events_url(env), auth)
    assert status == 404
    env.calendar.share(CLIENT_EMAIL, "reader")
    status, _ = await api(http, "GET", events_url(env), auth)
    assert status == 200
    body_in = event("2025-03-04T10:00:00", "2025-03-04T10:30:00")
    status, body = await api(http, "POST", events_url(env), auth, body_in)
    assert status == 403 and body["error"]["errors"][0]["reason"] == "requiredAccessLevel"


# -- Calendar --------------------------------------------------------------------------


async def test_events_insert_list_get_delete(env: GoogleEnv, http: aiohttp.ClientSession) -> None:
    auth = await bearer(env, http, scope=CALENDAR)
    private = {"private": {"callbackId": "cb-1"}}
    status, created = await api(
        http,
        "POST",
        events_url(env),
        auth,
        event(
            "2025-03-04T10:00:00",
            "2025-03-04T10:30:00",
            id="abcde12345",
            extendedProperties=private,
        ),
    )
    assert status == 200
    assert created["id"] == "abcde12345" and created["status"] == "confirmed"
    assert created["start"] == {"dateTime": "2025-03-04T10:00:00", "timeZone": "America/New_York"}
    assert created["creator"] == {"email": CLIENT_EMAIL}
    stored = env.calendar.events["abcde12345"]
    assert stored.start == datetime(2025, 3, 4, 15, 0, tzinfo=UTC)

    window = {"timeMin": "2025-03-04T00:00:00Z", "timeMax": "2025-03-05T00:00:00Z"}
    _, listed = await api(http, "GET", events_url(env), auth, **window)
    assert [e["id"] for e in listed["items"]] == ["abcde12345"]
    _, mine = await api(
        http, "GET", events_url(env), auth, privateExtendedProperty="callbackId=cb-1", **window
    )
    _, other = await api(
        http, "GET", events_url(env), auth, privateExtendedProperty="callbackId=cb-2", **window
    )
    assert len(mine["items"]) == 1 and other["items"] == []
    _, later = await api(http, "GET", events_url(env), auth, timeMin="2025-03-04T15:30:00Z")
    assert later["items"] == []

    status, _ = await api(http, "DELETE", events_url(env) + "/abcde12345", auth)
    assert status == 204
    status, gone = await api(http, "GET", events_url(env) + "/abcde12345", auth)
    assert status == 200 and gone["status"] == "cancelled"
    status, body = await api(http, "DELETE", events_url(env) + "/abcde12345", auth)
    assert status == 410
    _, listed = await api(http, "GET", events_url(env), auth, **window)
    assert listed["items"] == []
    # The id of a deleted event stays taken.
    status, body = await api(
        http,
        "POST",
        events_url(env),
        auth,
        event("2025-03-04T11:00:00", "2025-03-04T11:30:00", id="abcde12345"),
    )
    assert status == 409
    assert body["error"]["errors"][0] == {
        "domain": "global",
        "reason": "duplicate",
        "message": "The requested identifier already exists.",
    }
    status, _ = await api(http, "GET", events_url(env) + "/zzzzz", auth)
    assert status == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"id": "ABC-not-base32hex"}, "Invalid resource id value."),
        ({"id": "abc"}, "Invalid resource id value."),
        ({"start": {"dateTime": "2025-03-04T10:00:00"}}, "Missing time zone definition"),
        ({"end": {"dateTime": "2025-03-04T09:00:00-05:00"}}, "time range is empty"),
        ({"start": None}, "Missing start time"),
    ],
)
async def test_event_insert_validation(
    env: GoogleEnv, http: aiohttp.ClientSession, body: dict[str, Any], message: str
) -> None:
    auth = await bearer(env, http, scope=CALENDAR)
    payload = {**event("2025-03-04T10:00:00", "2025-03-04T10:30:00"), **body}
    status, answer = await api(http, "POST", events_url(env), auth, payload)
    assert status == 400 and message in answer["error"]["message"]
    assert env.calendar.events == {}


async def test_freebusy_merges_clips_and_skips_free_events(
    env: GoogleEnv, http: aiohttp.ClientSession
) -> None:
    cal = env.calendar
    cal.add_event(datetime(2025, 3, 4, 13, tzinfo=UTC), datetime(2025, 3, 4, 15, tzinfo=UTC))
    cal.add_event(datetime(2025, 3, 4, 14, tzinfo=UTC), datetime(2025, 3, 4, 16, tzinfo=UTC))
    cal.add_event(datetime(2025, 3, 4, 16, tzinfo=UTC), datetime(2025, 3, 4, 16, 30, tzinfo=UTC))
    cal.add_event(
        datetime(2025, 3, 4, 18, tzinfo=UTC), datetime(2025, 3, 4, 19, tzinfo=UTC), transparent=True
    )
    gone = cal.add_event(datetime(2025, 3, 4, 20, tzinfo=UTC), datetime(2025, 3, 4, 21, tzinfo=UTC))
    gone.status = "cancelled"
    cal.add_event(datetime(2025, 3, 4, 22, tzinfo=UTC), datetime(2025, 3, 5, 2, tzinfo=UTC))
    auth = await bearer(env, http, scope="https://www.googleapis.com/auth/calendar.freebusy")
    query = {
        "timeMin": "2025-03-04T14:00:00Z",
        "timeMax": "2025-03-05T01:00:00Z",
        "timeZone": "America/New_York",
        "items": [{"id": CALENDAR_ID}, {"id": "missing@example.com"}],
    }
    status, body = await api(http, "POST", env.url + "/calendar/v3/freeBusy", auth, query)
    assert status == 200 and body["kind"] == "calendar#freeBusy"
    assert body["calendars"][CALENDAR_ID]["busy"] == [
        {"start": "2025-03-04T09:00:00-05:00", "end": "2025-03-04T11:30:00-05:00"},
        {"start": "2025-03-04T17:00:00-05:00", "end": "2025-03-04T20:00:00-05:00"},
    ]
    assert body["calendars"]["missing@example.com"] == {
        "errors": [{"domain": "global", "reason": "notFound"}],
        "busy": [],
    }
    query["timeMax"] = query["timeMin"]
    status, body = await api(http, "POST", env.url + "/calendar/v3/freeBusy", auth, query)
    assert status == 400 and body["error"]["errors"][0]["reason"] == "timeRangeEmpty"


# -- Gmail -----------------------------------------------------------------------------


def raw_message(*headers: str, body: str = "Hello") -> str:
    text = "\r\n".join([*headers, "Content-Type: text/plain; charset=utf-8", "", body])
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


async def test_gmail_send_stores_the_decoded_message(
    env: GoogleEnv, http: aiohttp.ClientSession
) -> None:
    auth = await bearer(env, http, sub=MAILBOX, scope=" ".join(GMAIL_SCOPES))
    url = env.url + "/gmail/v1/users/me/messages/send"
    raw = raw_message("To: ada@example.org", f"From: {MAILBOX}", "Subject: Hi", body="Hello Ada")
    status, body = await api(http, "POST", url, auth, {"raw": raw})
    assert status == 200 and body["labelIds"] == ["SENT"]
    [sent] = env.emulator.sent
    assert sent.id == body["id"] and sent.user == MAILBOX
    assert sent.header("Subject") == "Hi" and sent.text == "Hello Ada"


@pytest.mark.parametrize(
    ("user", "raw", "status", "reason"),
    [
        ("me", None, 400, "invalidArgument"),
        ("me", "!!!", 400, "invalidArgument"),
        ("me", raw_message("Subject: nobody"), 400, "invalidArgument"),
        ("someone@example.com", raw_message("To: a@b.co"), 403, "forbidden"),
    ],
)
async def test_gmail_send_refusals(
    env: GoogleEnv,
    http: aiohttp.ClientSession,
    user: str,
    raw: str | None,
    status: int,
    reason: str,
) -> None:
    auth = await bearer(env, http, sub=MAILBOX, scope=" ".join(GMAIL_SCOPES))
    url = f"{env.url}/gmail/v1/users/{user}/messages/send"
    got, body = await api(http, "POST", url, auth, {"raw": raw} if raw else {})
    assert got == status and body["error"]["errors"][0]["reason"] == reason
    assert env.emulator.sent == []


async def test_gmail_needs_an_impersonated_user(
    env: GoogleEnv, http: aiohttp.ClientSession
) -> None:
    auth = await bearer(env, http, scope=" ".join(GMAIL_SCOPES))
    url = env.url + "/gmail/v1/users/me/messages/send"
    status, body = await api(http, "POST", url, auth, {"raw": raw_message("To: a@b.co")})
    assert status == 400 and body["error"]["errors"][0]["reason"] == "failedPrecondition"


# -- injected failures through the real client ------------------------------------------


@pytest.mark.parametrize(
    ("status", "times", "reason", "canonical"),
    [
        (401, 3, "authError", "UNAUTHENTICATED"),
        (403, 1, "forbidden", "PERMISSION_DENIED"),
        (404, 1, "notFound", "NOT_FOUND"),
        (409, 1, "duplicate", "ALREADY_EXISTS"),
        (429, 1, "rateLimitExceeded", "RESOURCE_EXHAUSTED"),
        (500, 1, "backendError", "INTERNAL"),
    ],
)
async def test_injected_errors_reach_the_client_with_google_codes(
    env: GoogleEnv,
    http: aiohttp.ClientSession,
    status: int,
    times: int,
    reason: str,
    canonical: str,
) -> None:
    env.emulator.fail_next("calendar", status, times=times)
    apis = env.apis()
    with pytest.raises(GoogleApiError) as caught:
        await apis.calendar(lambda s: s.events().list(calendarId=CALENDAR_ID))
    assert (caught.value.status, caught.value.reason) == (status, reason)
    # and the raw answer is Google-shaped
    auth = await bearer(env, http, scope=CALENDAR)
    env.emulator.fail_next("calendar", status)
    got, body = await api(http, "GET", events_url(env), auth)
    assert got == status
    assert body["error"]["code"] == status and body["error"]["status"] == canonical
    assert body["error"]["errors"][0]["reason"] == reason
    # faults are used up: the next request succeeds
    assert (await apis.calendar(lambda s: s.events().list(calendarId=CALENDAR_ID)))["items"] == []


async def test_a_fault_can_target_one_method(env: GoogleEnv) -> None:
    env.emulator.fail_next("calendar", 500, match="POST /calendar/v3/calendars/")
    apis = env.apis()
    await apis.calendar(lambda s: s.events().list(calendarId=CALENDAR_ID))
    with pytest.raises(GoogleApiError, match="backendError"):
        await apis.calendar(
            lambda s: s.events().insert(
                calendarId=CALENDAR_ID, body=event("2025-03-04T10:00:00", "2025-03-04T10:30:00")
            )
        )


async def test_token_faults_are_oauth_shaped(env: GoogleEnv) -> None:
    env.emulator.fail_next("token", 401)
    with pytest.raises(GoogleApiError) as caught:
        await env.apis().calendar(lambda s: s.events().list(calendarId=CALENDAR_ID))
    assert (caught.value.status, caught.value.reason) == (401, "unauthorized_client")
