"""send_sms against the Twilio REST emulator, send_email against the Google emulator, and the
tool catalog."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from email import policy
from email.parser import BytesParser
from typing import Any

import orjson
import pytest

from caller_engine.config import ConfigError
from caller_engine.sim.twilio.rest import TwilioRestEmulator
from caller_engine.telephony.rest import TwilioGateway
from caller_engine.tools.catalog import build_tools
from caller_engine.tools.email import build_message
from caller_engine.tools.registry import ToolContext, ToolOutcome, ToolRegistry
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, make_settings
from tests.google_env import CALLEE, MAILBOX, GoogleEnv, context, running_google

FROM_NUMBER = "+15550001111"


@pytest.fixture
async def env() -> AsyncIterator[GoogleEnv]:
    async with running_google() as google_env:
        yield google_env


@pytest.fixture
async def gateway(twilio: tuple[TwilioRestEmulator, str]) -> AsyncIterator[TwilioGateway]:
    gw = TwilioGateway(ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, base_url=twilio[1])
    yield gw
    await gw.close()


@pytest.fixture
def sms_emulator(twilio: tuple[TwilioRestEmulator, str]) -> TwilioRestEmulator:
    return twilio[0]


def sms_registry(gateway: TwilioGateway, **settings: Any) -> ToolRegistry:
    return ToolRegistry(build_tools(make_settings(**settings), gateway))


def email_registry(env: GoogleEnv, gateway: TwilioGateway, **settings: Any) -> ToolRegistry:
    return ToolRegistry(build_tools(env.settings(**settings), gateway, google=env.apis()))


async def call(
    registry: ToolRegistry, tool: str, ctx: ToolContext | None = None, /, **args: Any
) -> ToolOutcome:
    return await registry.dispatch(tool, orjson.dumps(args).decode(), ctx or context())


# -- send_sms --------------------------------------------------------------------------


async def test_sms_to_the_callee_reaches_twilio(
    gateway: TwilioGateway, sms_emulator: TwilioRestEmulator
) -> None:
    outcome = await call(sms_registry(gateway), "send_sms", message="See you Tuesday at 10:00.")
    assert outcome.ok, outcome.output
    [sent] = sms_emulator.messages
    assert outcome.output == {"status": "sent", "messageSid": sent.sid}
    assert (sent.to, sent.from_, sent.body) == (CALLEE, FROM_NUMBER, "See you Tuesday at 10:00.")


async def test_sms_accepts_the_callee_number_written_with_formatting(
    gateway: TwilioGateway, sms_emulator: TwilioRestEmulator
) -> None:
    outcome = await call(sms_registry(gateway), "send_sms", to="+1 (555) 000-2222", message="Hi")
    assert outcome.ok
    assert sms_emulator.messages[0].to == CALLEE


async def test_sms_to_someone_else_is_refused_by_default(
    gateway: TwilioGateway, sms_emulator: TwilioRestEmulator
) -> None:
    outcome = await call(sms_registry(gateway), "send_sms", to="+15559998888", message="Hi")
    assert not outcome.ok
    assert "only be sent to the number of this call" in outcome.output["error"]
    assert sms_emulator.requests == []


async def test_sms_to_anyone_when_configured(
    gateway: TwilioGateway, sms_emulator: TwilioRestEmulator
) -> None:
    registry = sms_registry(gateway, sms_allow_any_recipient=True)
    outcome = await call(registry, "send_sms", to="+15559998888", message="Hi")
    assert outcome.ok
    assert sms_emulator.messages[0].to == "+15559998888"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"to": "5559998888", "message": "Hi"}, "not a phone number in E.164 form"),
        ({"to": "+0123", "message": "Hi"}, "not a phone number in E.164 form"),
        ({"message": "x" * 613}, "invalid arguments: message"),
        ({"message": ""}, "invalid arguments: message"),
        ({"message": "   "}, "The text message is empty"),
    ],
)
async def test_sms_validation(
    gateway: TwilioGateway, sms_emulator: TwilioRestEmulator, args: dict[str, str], message: str
) -> None:
    registry = sms_registry(gateway, sms_allow_any_recipient=True)
    outcome = await call(registry, "send_sms", **args)
    assert not outcome.ok and message in outcome.output["error"]
    assert sms_emulator.requests == []


async def test_twilio_refusal_is_an_error_result(
    gateway: TwilioGateway, sms_emulator: TwilioRestEmulator
) -> None:
    sms_emulator.fail_next.append((400, 21610, "Attempt to send to unsubscribed recipient"))
    outcome = await call(sms_registry(gateway), "send_sms", message="Hi")
    assert not outcome.ok and set(outcome.output) == {"error"}
    assert outcome.output["error"].startswith("The text message could not be sent: ")
    assert "Attempt to send to unsubscribed recipient" in outcome.output["error"]


async def test_twilio_outage_is_an_error_result(
    gateway: TwilioGateway, sms_emulator: TwilioRestEmulator
) -> None:
    sms_emulator.fail_next.append((500, 20500, "Internal Server Error"))
    outcome = await call(sms_registry(gateway), "send_sms", message="Hi")
    assert not outcome.ok and "not available right now" in outcome.output["error"]


async def test_unreachable_twilio_is_an_error_result() -> None:
    gateway = TwilioGateway(ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, base_url="http://127.0.0.1:9")
    try:
        outcome = await call(sms_registry(gateway), "send_sms", message="Hi")
    finally:
        await gateway.close()
    assert not outcome.ok and "not available right now" in outcome.output["error"]


# -- send_email ------------------------------------------------------------------------


async def test_email_is_sent_as_the_impersonated_user(
    env: GoogleEnv, gateway: TwilioGateway
) -> None:
    registry = email_registry(env, gateway, business_name="Bright Smiles Dental")
    outcome = await call(
        registry,
        "send_email",
        to="ada@example.org",
        subject="Your appointment",
        body="Tuesday 4 March at 10:00.\nSee you then — Bright Smiles",
    )
    assert outcome.ok, outcome.output
    [sent] = env.emulator.sent
    assert outcome.output == {"status": "sent", "messageId": sent.id}
    assert sent.user == MAILBOX
    assert sent.header("To") == "ada@example.org"
    assert sent.header("From") == f"Bright Smiles Dental <{MAILBOX}>"
    assert sent.header("Subject") == "Your appointment"
    assert sent.header("Message-ID").endswith("@example.com>")
    assert sent.text == "Tuesday 4 March at 10:00.\nSee you then — Bright Smiles\n"
    request = next(r for r in env.emulator.requests if r.api == "gmail")
    assert request.path == "/gmail/v1/users/me/messages/send"


async def test_email_subject_cannot_inject_headers(env: GoogleEnv, gateway: TwilioGateway) -> None:
    registry = email_registry(env, gateway)
    subject = "Hello\r\nBcc: victim@example.net"
    outcome = await call(registry, "send_email", to="ada@example.org", subject=subject, body="x")
    assert outcome.ok
    [sent] = env.emulator.sent
    assert sent.header("Bcc") == ""
    assert sent.header("Subject") == "Hello Bcc: victim@example.net"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"to": "ada at example.org"}, "not a valid email address"),
        ({"to": "ada@example.org, eve@example.net"}, "not a valid email address"),
        ({"subject": ""}, "invalid arguments: subject"),
        ({"body": "x" * 10_001}, "invalid arguments: body"),
        ({"body": "  "}, "needs a subject and a body"),
    ],
)
async def test_email_validation(
    env: GoogleEnv, gateway: TwilioGateway, args: dict[str, str], message: str
) -> None:
    fields = {"to": "ada@example.org", "subject": "Hi", "body": "Hello", **args}
    outcome = await call(email_registry(env, gateway), "send_email", **fields)
    assert not outcome.ok and message in outcome.output["error"]
    assert env.emulator.sent == [] and env.emulator.calls("gmail") == 0


@pytest.mark.parametrize(
    ("status", "times", "reason", "message"),
    [
        (401, 3, None, "authorization failed"),
        (403, 1, "forbidden", "permission denied"),
        (429, 1, None, "busy right now"),
        (500, 1, None, "temporarily unavailable"),
        (400, 1, "invalidArgument", "rejected the request: Bad Request"),
    ],
)
async def test_gmail_errors_become_error_results(
    env: GoogleEnv,
    gateway: TwilioGateway,
    status: int,
    times: int,
    reason: str | None,
    message: str,
) -> None:
    env.emulator.fail_next("gmail", status, times=times, reason=reason)
    outcome = await call(
        email_registry(env, gateway), "send_email", to="ada@example.org", subject="Hi", body="x"
    )
    assert not outcome.ok and set(outcome.output) == {"error"}
    assert "email service" in outcome.output["error"] and message in outcome.output["error"]


async def test_email_without_domain_wide_delegation(gateway: TwilioGateway) -> None:
    async with running_google(delegate_gmail=False) as env:
        outcome = await call(
            email_registry(env, gateway), "send_email", to="ada@example.org", subject="Hi", body="x"
        )
        assert "authorization failed" in outcome.output["error"]
        assert env.emulator.sent == []


def test_build_message_is_rfc2822_base64url() -> None:
    raw = build_message("office@example.com", None, "ada@example.org", "Ünïcode", "Grüße\n")
    assert "+" not in raw and "/" not in raw
    data = base64.urlsafe_b64decode(raw)
    assert b"\r\n" in data
    message = BytesParser(policy=policy.default).parsebytes(data)
    assert message["From"] == "office@example.com"
    assert message["Subject"] == "Ünïcode"
    assert message["Date"]
    assert message.get_content_type() == "text/plain"
    assert message.get_content() == "Grüße\r\n"


# -- catalog ---------------------------------------------------------------------------


async def test_catalog_offers_only_enabled_tools(env: GoogleEnv, gateway: TwilioGateway) -> None:
    def names(**settings: Any) -> list[str]:
        return [t.name for t in build_tools(env.settings(**settings), gateway, google=env.apis())]

    assert names(enable_calendar_tools=False, enable_email_tools=False) == ["send_sms"]
    assert names(enable_email_tools=False) == ["check_availability", "schedule_meeting", "send_sms"]
    assert names(enable_calendar_tools=False) == ["send_sms", "send_email"]
    assert names() == ["check_availability", "schedule_meeting", "send_sms", "send_email"]
    registry = ToolRegistry(build_tools(env.settings(), gateway, google=env.apis()))
    assert [t.name for t in registry.select(["send_sms", "check_availability"])] == [
        "check_availability",
        "send_sms",
    ]


async def test_catalog_builds_the_google_client_from_settings(
    env: GoogleEnv, gateway: TwilioGateway
) -> None:
    tools = build_tools(env.settings(enable_email_tools=False), gateway)
    registry = ToolRegistry(tools)
    outcome = await call(registry, "check_availability", date="2099-01-01")
    assert "days ahead" in outcome.output["error"]  # real clock, real client, no request
    with pytest.raises(ConfigError, match="BUSINESS_TIMEZONE"):
        build_tools(env.settings(business_timezone="Mars/Olympus"), gateway, google=env.apis())


async def test_tool_schemas_as_the_model_sees_them(env: GoogleEnv, gateway: TwilioGateway) -> None:
    schemas = {t.name: t.schema() for t in build_tools(env.settings(), gateway, google=env.apis())}
    orjson.dumps(schemas)
    assert schemas["check_availability"]["parameters"]["required"] == ["date"]
    meeting = schemas["schedule_meeting"]["parameters"]
    assert meeting["required"] == ["date", "time", "name"]
    assert set(meeting["properties"]) == {"date", "time", "name", "phone", "email"}
    assert schemas["send_sms"]["parameters"]["required"] == ["message"]
    assert schemas["send_email"]["parameters"]["required"] == ["to", "subject", "body"]
    assert "America/New_York" in schemas["check_availability"]["description"]
    assert all(s["type"] == "function" for s in schemas.values())
