"""POST /call/initiate against the Twilio REST emulator through the real twilio SDK."""

from __future__ import annotations

from typing import Any

from caller_engine.sim.twilio.rest import TwilioRestEmulator
from tests.conftest import PUBLIC_BASE, Api

Twilio = tuple[TwilioRestEmulator, str]


async def test_initiate_dials_with_exact_parameters(api: Api, twilio: Twilio) -> None:
    emulator, _ = twilio
    resp = await api.initiate({"callbackId": "cb-1", "to": "+15551234567", "record": True})
    body = await resp.json()
    assert resp.status == 200, body
    assert body["success"] is True and body["callSid"].startswith("CA")
    assert body["status"] == "queued"
    [request] = emulator.requests
    form = request.form
    assert form["To"] == "+15551234567"
    assert form["From"] == "+15550001111"
    assert form["Url"] == f"{PUBLIC_BASE}/twiml/outbound?callbackId=cb-1"
    assert form["Method"] == "POST"
    # Twilio retries a callback we answer 5xx (or cannot be reached for) up to 5 times.
    retry = "#rc=5&rp=5xx,ct,rt"
    assert form["StatusCallback"] == f"{PUBLIC_BASE}/webhooks/call-status?callbackId=cb-1{retry}"
    assert form.getall("StatusCallbackEvent") == ["initiated", "ringing", "answered", "completed"]
    assert form["StatusCallbackMethod"] == "POST"
    assert form["TimeLimit"] == "300"
    assert form["Record"] == "true"
    assert form["MachineDetection"] == "Enable"
    assert form["AsyncAmd"] == "true"
    assert form["AsyncAmdStatusCallback"] == f"{PUBLIC_BASE}/webhooks/amd?callbackId=cb-1{retry}"
    assert form["AsyncAmdStatusCallbackMethod"] == "POST"


async def test_agent_overrides_are_kept_with_the_call(api: Api) -> None:
    agent = {
        "instructions": "Be brief.",
        "voice": "cedar",
        "greeting": "Hi!",
        "tools": ["end_call"],
        "metadata": {"crm": 7},
    }
    resp = await api.initiate({"callbackId": "cb-2", "to": "+15551234567", "agent": agent})
    assert resp.status == 200
    record = await api.services.store.get("cb-2")
    assert record is not None
    assert record.agent.voice == "cedar" and record.agent.metadata == {"crm": 7}


async def test_missing_or_wrong_api_key_is_401(api: Api, twilio: Twilio) -> None:
    body = {"callbackId": "cb", "to": "+15551234567"}
    assert (await api.initiate(body, key=None)).status == 401
    resp = await api.initiate(body, key="wrong")
    assert resp.status == 401 and (await resp.json())["success"] is False
    bearer = await api.session.post(
        api.url("/call/initiate"), json=body, headers={"Authorization": "Bearer test-api-key"}
    )
    assert bearer.status == 200
    assert len(twilio[0].requests) == 1


async def test_bad_bodies_name_the_field(api: Api, twilio: Twilio) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"callbackId": "cb", "to": "5551234567"}, "to"),
        ({"callbackId": "has space", "to": "+15551234567"}, "callbackId"),
        ({"callbackId": "x" * 129, "to": "+15551234567"}, "callbackId"),
        ({"to": "+15551234567"}, "callbackId"),
        ({"callbackId": "cb", "to": "+15551234567", "record": "maybe"}, "record"),
        ({"callbackId": "cb", "to": "+15551234567", "agent": {"tools": ["nope"]}}, "agent.tools.0"),
    ]
    for body, field in cases:
        resp = await api.initiate(body)
        payload = await resp.json()
        assert resp.status == 422, (body, payload)
        assert field in [f["field"] for f in payload["error"]["fields"]], payload
    assert twilio[0].requests == []


async def test_non_json_is_415_and_broken_json_is_400(api: Api) -> None:
    headers = {"X-API-Key": "test-api-key"}
    resp = await api.session.post(api.url("/call/initiate"), data="to=1", headers=headers)
    assert resp.status == 415
    resp = await api.session.post(
        api.url("/call/initiate"),
        data="{not json",
        headers={**headers, "Content-Type": "application/json"},
    )
    assert resp.status == 400


async def test_twilio_validation_error_is_400(api: Api) -> None:
    resp = await api.initiate({"callbackId": "cb-bad", "to": "+15005550002"})
    body = await resp.json()
    assert resp.status == 400
    assert body == {
        "success": False,
        "error": {"code": "21612", "message": body["error"]["message"]},
    }
    assert "not reachable" in body["error"]["message"]


async def test_twilio_failure_is_502(api: Api, twilio: Twilio) -> None:
    twilio[0].fail_next.append((500, 20500, "Internal Server Error"))
    resp = await api.initiate({"callbackId": "cb-500", "to": "+15551234567"})
    assert resp.status == 502
    assert (await resp.json())["error"]["code"] == "20500"


async def test_twilio_unreachable_is_502(api_factory: Any) -> None:
    api = await api_factory(twilio_api_base_url="http://127.0.0.1:9")
    resp = await api.initiate({"callbackId": "cb-down", "to": "+15551234567"})
    assert resp.status == 502
    error = (await resp.json())["error"]
    assert error["code"] == "unreachable"
    assert error["message"] == "Twilio could not be reached: could not connect to 127.0.0.1:9"


async def test_retry_of_same_callback_id_does_not_dial_twice(api: Api, twilio: Twilio) -> None:
    body = {"callbackId": "cb-dup", "to": "+15551234567"}
    first = await (await api.initiate(body)).json()
    second = await (await api.initiate(body)).json()
    assert second["duplicate"] is True and second["callSid"] == first["callSid"]
    other = await api.initiate({"callbackId": "cb-dup", "to": "+15557654321"})
    assert other.status == 409
    assert len(twilio[0].calls) == 1


async def test_failed_dial_may_be_retried(api: Api, twilio: Twilio) -> None:
    twilio[0].fail_next.append((503, 20503, "Service Unavailable"))
    body = {"callbackId": "cb-retry", "to": "+15551234567"}
    assert (await api.initiate(body)).status == 502
    retry = await api.initiate(body)
    assert retry.status == 200 and "duplicate" not in await retry.json()
    assert len(twilio[0].calls) == 1


async def test_a_tool_this_deployment_does_not_offer_is_named(api: Api) -> None:
    body = {"callbackId": "cb-tools", "to": "+15551234567", "agent": {"tools": ["send_email"]}}
    resp = await api.initiate(body)
    assert resp.status == 422
    [field] = (await resp.json())["error"]["fields"]
    assert field == {
        "field": "agent.tools",
        "message": "not enabled on this deployment: send_email",
    }
