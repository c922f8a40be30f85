"""Twilio request signatures: ours agree with Twilio's own SDK on every input."""

from __future__ import annotations

import random
import string

from multidict import MultiDict
from twilio.request_validator import RequestValidator

from caller_engine.telephony.signature import twilio_signature, twilio_signature_valid

TOKEN = "12345678901234567890123456789012"
ALPHABET = string.ascii_letters + string.digits + " +-_./:%&=?é€😀"


def _text(rng: random.Random, longest: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, longest)))


def _params(rng: random.Random) -> MultiDict[str]:
    params: MultiDict[str] = MultiDict()
    names = [_text(rng, 12) or "X" for _ in range(rng.randint(0, 8))]
    for name in names:
        for _ in range(rng.randint(1, 3)):  # repeated names, sometimes repeated values
            params.add(name, rng.choice([_text(rng, 30), "same"]))
    return params


def test_signatures_match_the_sdk_for_random_requests() -> None:
    rng = random.Random(20261130)
    sdk = RequestValidator(TOKEN)
    for _ in range(500):
        host = rng.choice(["calls.example.com", "calls.example.com:8443", "10.0.0.5:80"])
        url = f"https://{host}/webhooks/call-status?callbackId={_text(rng, 10)}"
        params = _params(rng)
        expected = sdk.compute_signature(url, params)
        assert twilio_signature(TOKEN, url, params) == expected
        assert twilio_signature_valid(TOKEN, url, params, expected)
        assert sdk.validate(url, params, expected)


def test_validation_accepts_what_the_sdk_accepts_and_nothing_else() -> None:
    params = {"CallSid": "CA1", "CallStatus": "ringing"}
    sdk = RequestValidator(TOKEN)
    url = "https://calls.example.com/webhooks/call-status?callbackId=cb-1"
    for signed in (url, "https://calls.example.com:443/webhooks/call-status?callbackId=cb-1"):
        signature = sdk.compute_signature(signed, params)
        assert twilio_signature_valid(TOKEN, url, params, signature)  # with or without port
    signature = sdk.compute_signature(url, params)
    assert not twilio_signature_valid(TOKEN, url, {**params, "CallStatus": "busy"}, signature)
    assert not twilio_signature_valid(TOKEN, url + "&x=1", params, signature)
    assert not twilio_signature_valid("another-token", url, params, signature)
    assert not twilio_signature_valid(TOKEN, url, params, None)
    assert not twilio_signature_valid(TOKEN, url, params, "")
    # Any one of several URLs (a callback URL with its connection-override fragment).
    fragment = url + "#rc=5&rp=5xx,ct,rt"
    signed = sdk.compute_signature(fragment, params)
    assert twilio_signature_valid(TOKEN, (url, fragment), params, signed)
    assert not twilio_signature_valid(TOKEN, url, params, signed)


def test_a_websocket_upgrade_may_be_signed_without_its_query() -> None:
    url = "wss://calls.example.com/media-stream?callbackId=cb-1"
    bare = RequestValidator(TOKEN).compute_signature("wss://calls.example.com/media-stream", {})
    assert twilio_signature_valid(TOKEN, url, {}, bare)
