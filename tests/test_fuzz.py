"""Property-based fuzzing of the live server.

The orchestrator API is fuzzed from its own OpenAPI document (schemathesis): every answer
must be documented (status code, content type, schema), never a 5xx. The Twilio-facing
form endpoints get random bodies signed like Twilio's. Example counts are bounded and the
generation is derandomized, so the suite stays short and repeatable.
"""

from __future__ import annotations

import base64
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caller_engine.guardrails.zones import valid_zone
from caller_engine.realtime.names import PROVIDER_NAMES
from caller_engine.sim.google.keys import new_service_account_key
from caller_engine.telephony.signature import sign_twilio_request
from caller_engine.web.openapi import document
from caller_engine.web.schemas import CURSOR_PATTERN
from tests.conftest import API_KEY, AUTH_TOKEN, PUBLIC_BASE
from tests.live_server import LiveServer

API_EXAMPLES = 40  # per operation and generation phase
FORM_EXAMPLES = 60  # per Twilio-facing endpoint

FUZZ = settings(
    max_examples=API_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
SCHEMA = schemathesis.openapi.from_dict(document())
SENT: Counter[str] = Counter()
ZONES = ("America/New_York", "Europe/Paris", "Asia/Tokyo", "Pacific/Pago_Pago", "UTC")


def full_transfer_targets(body: object) -> None:
    """Which names are configured targets, and that names are unique, the schema cannot say:
    a documented name-only entry gets a number and a repeated name a suffix."""
    agent = body.get("agent") if isinstance(body, dict) else None
    targets = agent.get("transferTargets") if isinstance(agent, dict) else None
    if not isinstance(targets, list):
        return
    seen: set[str] = set()
    for n, spec in enumerate(targets):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            return  # not of the documented form: left for the server to refuse
        if spec["name"] in seen:
            spec["name"] = f"t{n}"[:32]
        seen.add(spec["name"])
        if (spec.get("number") is None and "number" not in spec) or spec.get("number") is None:
            spec["number"] = "+15550100000"


def configured_provider(body: object) -> None:
    """Which providers a deployment configured the schema cannot say: a documented provider
    name becomes the one this server has."""
    agent = body.get("agent") if isinstance(body, dict) else None
    provider = agent.get("provider") if isinstance(agent, dict) else None
    if isinstance(agent, dict) and isinstance(provider, str) and provider in PROVIDER_NAMES:
        agent["provider"] = "openai"


def known_timezone(body: object) -> None:
    """Which names are IANA zones the schema cannot say: a generated name that is not one
    becomes one (chosen by the generated text); one too long stays, to be refused."""
    zone = body.get("calleeTimezone") if isinstance(body, dict) else None
    if (
        isinstance(body, dict)
        and isinstance(zone, str)
        and len(zone) <= 64
        and not valid_zone(zone)
    ):
        body["calleeTimezone"] = ZONES[sum(map(ord, zone)) % len(ZONES)]


def issued_cursor(path: str, query: dict[str, object] | None) -> None:
    """A cursor is opaque: only ones the server issued decode. A generated cursor of the
    documented form becomes one (with the generated text as the callbackId it points after,
    or its length as the number)."""
    cursor = (query or {}).get("cursor")
    if query is not None and isinstance(cursor, str) and re.fullmatch(CURSOR_PATTERN, cursor):
        if path == "/dnc":
            raw = f"+1555{len(cursor):07d}".encode()
        else:
            raw = f"2000-01-01T00:00:00+00:00|{cursor}".encode()
        query["cursor"] = base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    db = tmp_path_factory.mktemp("fuzz") / "calls.db"
    # Private result webhooks allowed: which addresses are refused is not expressible in the
    # schema (test_result_destinations covers it); the URL's form is.
    private_pem, _ = new_service_account_key()
    server = LiveServer(
        database_url=f"sqlite:///{db}",
        result_webhook_allow_private=True,
        # Any hour: a call refused for its callee's local time (which the schema cannot
        # express) is a valid request answered 422; calling hours have their own tests. The
        # do-not-call list and the frequency cap stay on (their refusals are documented).
        calling_hours="00:00-24:00",
        # Every tool enabled, so that any documented tool name is accepted.
        enable_calendar_tools=True,
        enable_email_tools=True,
        google_client_email="caller@project.iam.gserviceaccount.com",
        google_private_key=private_pem,
        google_calendar_id="front-desk@example.com",
        google_impersonated_user="front-desk@example.com",
    ).start()
    yield server
    server.stop()
    print("\nfuzz examples sent:", dict(sorted(SENT.items())), "total", sum(SENT.values()))


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@SCHEMA.parametrize()
@FUZZ
def test_orchestrator_api_answers_as_documented(
    case: schemathesis.Case, live: LiveServer, http: requests.Session
) -> None:
    SENT[f"{case.method} {case.path}"] += 1
    issued_cursor(case.path, case.query)
    full_transfer_targets(case.body)
    configured_provider(case.body)
    known_timezone(case.body)
    response = case.call(base_url=live.url, session=http, headers={"X-API-Key": API_KEY})
    assert response.status_code < 500, response.text
    SENT[f"{case.method} {case.path} -> {response.status_code}"] += 1
    case.validate_response(response, headers={"X-API-Key": API_KEY})


# -- Twilio-facing endpoints --------------------------------------------------------------

FIELD_NAMES = st.sampled_from(
    [
        "CallSid",
        "CallStatus",
        "SequenceNumber",
        "Timestamp",
        "CallDuration",
        "AnsweredBy",
        "MachineDetectionDuration",
        "RecordingUrl",
        "ErrorCode",
        "AccountSid",
        "SipResponseCode",
    ]
) | st.text(min_size=1, max_size=20)
FIELD_VALUES = (
    st.text(max_size=40)
    | st.sampled_from(["initiated", "ringing", "in-progress", "completed", "busy", "human"])
    | st.integers(-(2**40), 2**40).map(str)
)
FORMS = st.dictionaries(FIELD_NAMES, FIELD_VALUES, max_size=12)
CALLBACK_IDS = st.none() | st.text(max_size=30) | st.sampled_from(["cb-1", "cb-fuzz"])
ENDPOINTS = ["/webhooks/call-status", "/webhooks/amd", "/twiml/outbound"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_twilio_endpoints_take_any_signed_form(
    live: LiveServer, http: requests.Session, endpoint: str
) -> None:
    @settings(
        max_examples=FORM_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(form=FORMS, callback_id=CALLBACK_IDS)
    def post(form: dict[str, str], callback_id: str | None) -> None:
        SENT[f"POST {endpoint}"] += 1
        path = endpoint + (f"?{urlencode({'callbackId': callback_id})}" if callback_id else "")
        body = {k: v for k, v in form.items() if "\x00" not in k + v}
        signature = sign_twilio_request(AUTH_TOKEN, PUBLIC_BASE + path, body)
        response = http.post(
            live.url + path, data=body, headers={"X-Twilio-Signature": signature}, timeout=10
        )
        assert response.status_code < 500, (path, body, response.text)
        assert response.status_code in (200, 400), (path, body, response.status_code)

    post()


def test_the_server_is_healthy_after_the_fuzz(live: LiveServer, http: requests.Session) -> None:
    health = http.get(live.url + "/health", timeout=5).json()
    assert health["status"] == "ok" and health["database"] == "ok"
    listed = http.get(live.url + "/calls?limit=1", headers={"X-API-Key": API_KEY}, timeout=5)
    assert listed.status_code == 200


def test_the_committed_document_is_served(live: LiveServer, http: requests.Session) -> None:
    committed = (Path(__file__).parent.parent / "openapi.json").read_bytes()
    served = http.get(live.url + "/openapi.json", timeout=5)
    assert served.status_code == 200 and served.content == committed
