"""TwiML for the stream, and authentication of the Media Stream upgrade and start."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import aiohttp
import orjson
import pytest

from caller_engine.telephony.signature import sign_twilio_request, stream_token
from tests.conftest import AUTH_TOKEN, PUBLIC_BASE, Api


async def _twiml(api: Api, callback_id: str, call_sid: str) -> ET.Element:
    resp = await api.twilio_post(
        f"/twiml/outbound?callbackId={callback_id}", {"CallSid": call_sid, "AccountSid": "AC0"}
    )
    assert resp.status == 200
    assert resp.content_type == "text/xml"
    return ET.fromstring(await resp.text())


async def test_twiml_connects_a_stream_with_parameters_and_no_query(api: Api) -> None:
    root = await _twiml(api, "cb-t", "CA123")
    assert root.tag == "Response"
    assert root.find("Say") is None
    stream = root.find("Connect/Stream")
    assert stream is not None
    url = stream.get("url", "")
    assert url == "wss://calls.example.com/media-stream" and "?" not in url
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    secret = api.services.settings.stream_secret
    assert params == {"callbackId": "cb-t", "token": stream_token(secret, "CA123", "cb-t")}


async def test_twiml_get_is_signed_over_the_query(api: Api) -> None:
    path = "/twiml/outbound?callbackId=cb-g&CallSid=CA9"
    sig = sign_twilio_request(AUTH_TOKEN, PUBLIC_BASE + path, {})
    resp = await api.session.get(api.url(path), headers={"X-Twilio-Signature": sig})
    assert resp.status == 200
    assert "cb-g" in await resp.text()
    assert (await api.session.get(api.url(path))).status == 403


async def test_twiml_for_unknown_call_hangs_up(api: Api) -> None:
    resp = await api.twilio_post("/twiml/outbound", {"CallSid": "CAunknown"})
    assert "<Hangup" in await resp.text()


def _ws_signature(path: str = "/media-stream") -> dict[str, str]:
    url = "wss://calls.example.com" + path
    return {"X-Twilio-Signature": sign_twilio_request(AUTH_TOKEN, url, {})}


def _start(call_sid: str, callback_id: str, token: str) -> bytes:
    return orjson.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": "MZ1",
            "start": {
                "accountSid": "AC0",
                "streamSid": "MZ1",
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": {"callbackId": callback_id, "token": token},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )


async def test_unsigned_stream_upgrade_is_refused(api: Api) -> None:
    ws_url = api.url("/media-stream").replace("http", "ws")
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await api.session.ws_connect(ws_url)
    assert err.value.status == 403


async def test_stream_with_bad_token_is_closed_with_1008(api: Api) -> None:
    ws_url = api.url("/media-stream").replace("http", "ws")
    ws = await api.session.ws_connect(ws_url, headers=_ws_signature())
    await ws.send_str('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    await ws.send_str(_start("CA1", "cb-x", "0" * 32).decode())
    msg = await ws.receive()
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 1008
