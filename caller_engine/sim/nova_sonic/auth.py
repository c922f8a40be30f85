"""What Bedrock checks before and during a signed event stream, against fixed credentials.

The request must carry a SigV4 `Authorization` for service `bedrock` in the emulator's
region, dated within five minutes, with the streaming-events payload hash; every message
the client sends must be an envelope whose `:chunk-signature` continues the chain from the
request's signature. Refusals use the service's error types and messages.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime

from caller_engine.aws import sigv4
from caller_engine.aws.eventstream import Message, Timestamp

TEST_CREDENTIALS = sigv4.Credentials(
    "AKIDNOVASONICEXAMPLE", "nova/sonic/emulator/secret/EXAMPLEKEY", None
)
MAX_SKEW_S = 300
BAD_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. Check "
    "your AWS Secret Access Key and signing method. Consult the service documentation for "
    "details."
)


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    error_type: str
    message: str


def verify_request(
    headers: dict[str, str],
    method: str,
    path: str,
    *,
    credentials: sigv4.Credentials,
    region: str,
    now: datetime,
) -> tuple[str, Refusal | None]:
    """(the request's signature, a refusal or None)."""
    auth_value = headers.get("authorization", "")
    if auth_value.lower().startswith("bearer "):
        return "", Refusal(403, "AccessDeniedException", "Bearer authentication is not allowed")
    auth = sigv4.parse_authorization(auth_value)
    if auth is None:
        return "", Refusal(
            403,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        )
    if auth.access_key_id != credentials.access_key_id:
        return "", Refusal(
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    if credentials.session_token and headers.get("x-amz-security-token") != (
        credentials.session_token
    ):
        return "", Refusal(
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    if auth.service != "bedrock" or auth.region != region:
        return "", Refusal(
            403,
            "InvalidSignatureException",
            f"Credential should be scoped to correct service: 'bedrock' in region '{region}'.",
        )
    date = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "", Refusal(403, "IncompleteSignatureException", "X-Amz-Date is missing.")
    if abs((now - signed_at).total_seconds()) > MAX_SKEW_S or auth.day != date[:8]:
        return "", Refusal(
            403,
            "InvalidSignatureException",
            f"Signature expired: {date} is now earlier or later than the allowed window.",
        )
    if "host" not in auth.signed_headers or any(h not in headers for h in auth.signed_headers):
        return "", Refusal(403, "InvalidSignatureException", BAD_SIGNATURE)
    payload_hash = headers.get("x-amz-content-sha256", "")
    canonical = sigv4.canonical_request(
        method, path, "", headers, auth.signed_headers, payload_hash
    )
    expected = sigv4.request_signature(
        credentials.secret_access_key, region, "bedrock", date, canonical
    )
    if not hmac.compare_digest(expected, auth.signature):
        return "", Refusal(403, "InvalidSignatureException", BAD_SIGNATURE)
    if payload_hash != sigv4.STREAMING_EVENTS_PAYLOAD:
        return "", Refusal(
            400,
            "ValidationException",
            "x-amz-content-sha256 must be STREAMING-AWS4-HMAC-SHA256-EVENTS for an event stream",
        )
    return auth.signature, None


class EventChain:
    """Checks each envelope's signature against the previous one."""

    def __init__(self, credentials: sigv4.Credentials, region: str, seed: str) -> None:
        self._credentials = credentials
        self._region = region
        self.prior = seed
        self.count = 0

    def open(self, envelope: Message) -> bytes | str:
        """The wrapped bytes, or why the envelope is refused."""
        date = envelope.headers.get(":date")
        signature = envelope.headers.get(":chunk-signature")
        if not isinstance(date, Timestamp) or not isinstance(signature, bytes):
            return "Event is not signed: :date and :chunk-signature headers are required"
        expected = sigv4.event_signature(
            self._credentials.secret_access_key,
            self._region,
            "bedrock",
            self.prior,
            int(date),
            envelope.payload,
        )
        if not hmac.compare_digest(expected, signature):
            return "Invalid event signature"
        self.prior = expected.hex()
        self.count += 1
        return envelope.payload
