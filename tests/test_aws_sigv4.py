"""SigV4 request signing and the event signature chain, cross-checked against botocore."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from caller_engine.aws import sigv4
from caller_engine.aws.eventstream import Decoder, Timestamp, encode_header

CREDENTIALS = sigv4.Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
HOST = "bedrock-runtime.us-east-1.amazonaws.com"
PATH = "/model/amazon.nova-2-sonic-v1%3A0/invoke-with-bidirectional-stream"
WHEN = datetime(2026, 11, 30, 8, 15, 42, tzinfo=UTC)


def _botocore_authorization(
    monkeypatch: pytest.MonkeyPatch, headers: dict[str, str], token: str | None = None
) -> str:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: WHEN.replace(tzinfo=None))
    request = AWSRequest(method="POST", url=f"https://{HOST}{PATH}", headers=dict(headers))
    request.headers["X-Amz-Content-SHA256"] = sigv4.STREAMING_EVENTS_PAYLOAD
    credentials = BotoCredentials(CREDENTIALS.access_key_id, CREDENTIALS.secret_access_key, token)
    botocore.auth.SigV4Auth(credentials, "bedrock", "us-east-1").add_auth(request)
    return str(request.headers["Authorization"])


@pytest.mark.parametrize("token", [None, "FQoGZXIvYXdzEXAMPLETOKEN"])
def test_request_signature_matches_botocore(
    monkeypatch: pytest.MonkeyPatch, token: str | None
) -> None:
    headers = {
        "content-type": "application/vnd.amazon.eventstream",
        "accept": "application/vnd.amazon.eventstream",
    }
    credentials = sigv4.Credentials(CREDENTIALS.access_key_id, CREDENTIALS.secret_access_key, token)
    signed, signature = sigv4.sign_request(
        method="POST",
        host=HOST,
        path=PATH,
        headers=headers,
        credentials=credentials,
        region="us-east-1",
        service="bedrock",
        when=WHEN,
    )
    assert signed["authorization"] == _botocore_authorization(monkeypatch, headers, token)
    assert signed["authorization"].endswith(f"Signature={signature}")
    assert signed["x-amz-date"] == "20261130T081542Z"
    assert signed["x-amz-content-sha256"] == "STREAMING-AWS4-HMAC-SHA256-EVENTS"
    assert (signed.get("x-amz-security-token")) == token


def test_the_model_id_is_encoded_twice_in_the_canonical_request() -> None:
    canonical = sigv4.canonical_request("POST", PATH, "", {"host": HOST}, ["host"], "x")
    assert canonical.splitlines()[1] == (
        "/model/amazon.nova-2-sonic-v1%253A0/invoke-with-bidirectional-stream"
    )


def test_parse_authorization() -> None:
    signed, signature = sigv4.sign_request(
        method="POST",
        host=HOST,
        path=PATH,
        headers={},
        credentials=CREDENTIALS,
        region="eu-north-1",
        service="bedrock",
        when=WHEN,
    )
    parsed = sigv4.parse_authorization(signed["authorization"])
    assert parsed == sigv4.Authorization(
        "AKIDEXAMPLE",
        "20261130",
        "eu-north-1",
        "bedrock",
        ["host", "x-amz-content-sha256", "x-amz-date"],
        signature,
    )
    assert sigv4.parse_authorization("Bearer abc") is None


def _botocore_signature(string_to_sign: str, when: datetime) -> bytes:
    """botocore derives the key and computes the HMAC; the string to sign is the
    published event format."""
    credentials = BotoCredentials(CREDENTIALS.access_key_id, CREDENTIALS.secret_access_key)
    signer = botocore.auth.SigV4Auth(credentials, "bedrock", "us-east-1")
    request = AWSRequest(method="POST", url=f"https://{HOST}{PATH}")
    request.context["timestamp"] = when.strftime("%Y%m%dT%H%M%SZ")
    return bytes.fromhex(signer.signature(string_to_sign, request))


def test_event_chain_matches_an_independent_computation() -> None:
    seed = "a" * 64
    signer = sigv4.EventSigner(CREDENTIALS, "us-east-1", "bedrock", seed)
    prior = seed
    payloads = [b"first event bytes", b"second", b""]
    for index, payload in enumerate(payloads):
        timestamp_ms = int(WHEN.timestamp() * 1000) + index * 1500 + 7
        envelope = signer.envelope(payload, timestamp_ms)
        (message,) = Decoder().feed(envelope)
        assert message.payload == payload
        assert message.headers[":date"] == timestamp_ms
        second = datetime.fromtimestamp(timestamp_ms // 1000, UTC)
        date = second.strftime("%Y%m%dT%H%M%SZ")
        string_to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                date,
                f"{date[:8]}/us-east-1/bedrock/aws4_request",
                prior,
                hashlib.sha256(encode_header(":date", Timestamp(timestamp_ms))).hexdigest(),
                hashlib.sha256(payload).hexdigest(),
            ]
        )
        expected = _botocore_signature(string_to_sign, second)
        assert message.headers[":chunk-signature"] == expected
        prior = expected.hex()
        assert signer.prior_signature == prior


def test_the_date_header_is_the_timestamp_type() -> None:
    # name length, name, type 8 (timestamp), 8-byte big-endian milliseconds
    assert encode_header(":date", Timestamp(1)) == b"\x05:date\x08" + (1).to_bytes(8, "big")
