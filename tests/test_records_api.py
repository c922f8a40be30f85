"""GET /calls and GET /calls/{callbackId}."""

# ruff: noqa: F811  (pytest fixtures imported from tests.store_backends)

from __future__ import annotations

from typing import Any

from tests.conftest import API_KEY, Api
from tests.store_backends import Instances, db, instances  # noqa: F401


async def _get(api: Api, path: str, key: str | None = API_KEY) -> tuple[int, Any]:
    headers = {"X-API-Key": key} if key else {}
    resp = await api.session.get(api.url(path), headers=headers)
    return resp.status, await resp.json()


async def _dial(api: Api, callback_id: str, **body: Any) -> str:
    resp = await api.initiate({"callbackId": callback_id, "to": "+15551234567", **body})
    assert resp.status == 200
    return str((await resp.json())["callSid"])


async def test_full_record_by_callback_id(instances: Instances) -> None:
    api = await instances.start(result_webhook_url="http://127.0.0.1:9/results")
    sid = await _dial(api, "cb-1", record=True, agent={"voice": "cedar", "metadata": {"a": 1}})
    for value, seq, extra in [
        ("ringing", 1, {}),
        ("in-progress", 2, {}),
        ("completed", 3, {"CallDuration": "12", "RecordingUrl": "https://rec/1"}),
    ]:
        params = {"CallSid": sid, "CallStatus": value, "SequenceNumber": str(seq), **extra}
        await api.twilio_post("/webhooks/call-status?callbackId=cb-1", params)
    status, body = await _get(api, "/calls/cb-1")
    assert status == 200
    assert body["callbackId"] == "cb-1" and body["callSid"] == sid and body["record"] is True
    assert body["agent"] == {"voice": "cedar", "metadata": {"a": 1}}
    assert body["status"] == "completed" and body["duration"] == 12
    assert [e["status"] for e in body["statusHistory"]] == ["ringing", "in-progress", "completed"]
    assert body["statusHistory"][-1]["CallDuration"] == "12"
    assert body["recordingUrl"] == "https://rec/1"
    assert body["createdAt"].endswith("Z") and body["endedAt"].endswith("Z")
    assert body["result"]["status"] == "completed" and body["resultSource"] == "record"
    delivery = body["delivery"]
    assert delivery["url"] == "http://127.0.0.1:9/results" and delivery["attempts"] >= 0
    assert delivery["state"] in ("pending", "delivering")


async def test_unknown_call_is_404_and_the_key_is_required(instances: Instances) -> None:
    api = await instances.start()
    status, body = await _get(api, "/calls/nope")
    assert status == 404 and body["error"]["code"] == "not_found"
    assert (await _get(api, "/calls/nope", key=None))[0] == 401
    assert (await _get(api, "/calls", key="wrong"))[0] == 401


async def test_listing_pages_through_recent_calls(instances: Instances) -> None:
    api = await instances.start()
    sids = {
        cb: await _dial(api, cb, to=f"+1555123456{i}")
        for i, cb in enumerate(("cb-a", "cb-b", "cb-c", "cb-d", "cb-e"))
    }
    params = {"CallSid": sids["cb-c"], "CallStatus": "busy", "SequenceNumber": "1"}
    await api.twilio_post("/webhooks/call-status?callbackId=cb-c", params)
    seen: list[str] = []
    cursor = ""
    while True:
        status, page = await _get(api, "/calls?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200
        seen += [c["callbackId"] for c in page["calls"]]
        if not page["nextCursor"]:
            break
        cursor = page["nextCursor"]
    assert seen == ["cb-e", "cb-d", "cb-c", "cb-b", "cb-a"]
    status, busy = await _get(api, "/calls?status=busy,no-answer")
    assert [c["callbackId"] for c in busy["calls"]] == ["cb-c"]
    assert busy["calls"][0]["resultStatus"] == "busy" and busy["nextCursor"] is None
    _, everything = await _get(api, "/calls?since=2000-01-01T00:00:00Z")
    assert len(everything["calls"]) == 5
    _, future = await _get(api, "/calls?since=2999-01-01T00:00:00%2B00:00")
    assert future["calls"] == []


async def test_bad_query_parameters_are_named(instances: Instances) -> None:
    api = await instances.start()
    status, body = await _get(api, "/calls?limit=0&since=yesterday&cursor=%%%")
    assert status == 400
    assert sorted(f["field"] for f in body["error"]["fields"]) == ["cursor", "limit", "since"]
    assert (await _get(api, "/calls?limit=201"))[0] == 400
    assert (await _get(api, "/calls?since=2024-01-01T00:00:00"))[0] == 400
