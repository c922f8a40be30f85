"""Status and AMD webhooks: signatures, ordering, duplicates."""

from __future__ import annotations

from yarl import URL

from caller_engine.sim.twilio.rest import TwilioRestEmulator
from caller_engine.telephony.signature import sign_twilio_request
from tests.conftest import AUTH_TOKEN, PUBLIC_BASE, Api


async def _dial(api: Api, callback_id: str = "cb-w") -> str:
    body = await (await api.initiate({"callbackId": callback_id, "to": "+15551234567"})).json()
    return str(body["callSid"])


def _status(call_sid: str, status: str, seq: int, **extra: str) -> dict[str, str]:
    return {
        "CallSid": call_sid,
        "AccountSid": "AC0",
        "CallStatus": status,
        "SequenceNumber": str(seq),
        **extra,
    }


async def test_unsigned_or_wrongly_signed_callbacks_are_refused(api: Api) -> None:
    sid = await _dial(api)
    path = "/webhooks/call-status?callbackId=cb-w"
    params = _status(sid, "ringing", 1)
    unsigned = await api.session.post(api.url(path), data=params)
    assert unsigned.status == 403
    wrong = await api.twilio_post(path, params, signature="bm90IGEgc2lnbmF0dXJl")
    assert wrong.status == 403
    record = await api.services.store.get("cb-w")
    assert record is not None and record.status_history == []


async def test_replayed_signature_with_other_params_is_refused(api: Api) -> None:
    sid = await _dial(api)
    path = "/webhooks/call-status?callbackId=cb-w"
    good = await api.twilio_post(path, _status(sid, "ringing", 1))
    assert good.status == 200
    from caller_engine.telephony.signature import sign_twilio_request
    from tests.conftest import AUTH_TOKEN, PUBLIC_BASE

    signature = sign_twilio_request(AUTH_TOKEN, PUBLIC_BASE + path, _status(sid, "ringing", 1))
    forged = await api.twilio_post(path, _status(sid, "completed", 5), signature=signature)
    assert forged.status == 403
    record = await api.services.store.get("cb-w")
    assert record is not None and record.status == "ringing"


async def test_out_of_order_and_duplicate_callbacks(api: Api) -> None:
    sid = await _dial(api)
    path = "/webhooks/call-status?callbackId=cb-w"
    for status, seq in [
        ("ringing", 1),
        ("initiated", 0),
        ("completed", 3),
        ("in-progress", 2),
        ("completed", 3),
    ]:
        extra = {"CallDuration": "42", "SipResponseCode": "200"} if status == "completed" else {}
        resp = await api.twilio_post(path, _status(sid, status, seq, **extra))
        assert resp.status == 200
        assert await resp.text() == ""
    record = await api.services.store.get("cb-w")
    assert record is not None
    assert [e.status for e in record.status_history] == [
        "initiated",
        "ringing",
        "in-progress",
        "completed",
    ]
    assert record.status == "completed" and record.duration == 42


async def test_amd_callback_records_answered_by(api: Api) -> None:
    sid = await _dial(api)
    seen: list[str] = []

    async def listener(_record: object, answered_by: str) -> None:
        seen.append(answered_by)

    api.services.calls.on_answered_by(listener)
    resp = await api.twilio_post(
        "/webhooks/amd?callbackId=cb-w",
        {
            "CallSid": sid,
            "AccountSid": "AC0",
            "AnsweredBy": "machine_start",
            "MachineDetectionDuration": "2100",
        },
    )
    assert resp.status == 200
    record = await api.services.store.get("cb-w")
    assert record is not None and record.answered_by == "machine_start"
    assert seen == ["machine_start"]


async def test_signature_checks_can_be_disabled_in_development(api_factory: object) -> None:
    api: Api = await api_factory(twilio_validate_signatures=False)  # type: ignore[operator]
    sid = await _dial(api)
    resp = await api.session.post(api.url("/webhooks/call-status"), data=_status(sid, "ringing", 1))
    assert resp.status == 200


async def test_callbacks_to_the_exact_url_we_gave_twilio_are_accepted(
    api: Api, twilio: tuple[TwilioRestEmulator, str]
) -> None:
    """A callbackId with ':' is percent-encoded in our callback URL; Twilio signs that URL
    as written, so the signature is checked against the request target as sent."""
    sid = await _dial(api, "crm:lead:42")
    status_url = twilio[0].calls[sid].get("StatusCallback")
    assert "crm%3Alead%3A42" in status_url
    params = _status(sid, "ringing", 1)
    target = URL(api.url(status_url.removeprefix(PUBLIC_BASE)), encoded=True)
    resp = await api.session.post(
        target,
        data=params,
        headers={"X-Twilio-Signature": sign_twilio_request(AUTH_TOKEN, status_url, params)},
    )
    assert resp.status == 200
    record = await api.services.store.get("crm:lead:42")
    assert record is not None and record.status == "ringing"
