"""AWS Signature Version 4: request signing and the chained signatures of an event stream.

A bidirectional event stream is signed twice over. The HTTP request carries a normal SigV4
`Authorization` header whose payload hash is the literal `STREAMING-AWS4-HMAC-SHA256-EVENTS`;
each message the client then sends is wrapped in an envelope whose `:chunk-signature`
header signs the wrapped bytes, the envelope's `:date` and the previous signature, starting
from the request's. The final envelope wraps nothing and closes the chain.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from urllib.parse import quote

from caller_engine.aws.eventstream import Timestamp, encode_header, encode_message

ALGORITHM = "AWS4-HMAC-SHA256"
EVENT_ALGORITHM = "AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_EVENTS_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-EVENTS"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# Headers a proxy may add or rewrite: never signed.
UNSIGNED_HEADERS = frozenset(
    {"authorization", "expect", "transfer-encoding", "user-agent", "x-amzn-trace-id"}
)


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


def amz_date(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


@lru_cache(maxsize=64)
def signing_key(secret: str, day: str, region: str, service: str) -> bytes:
    key = hmac.digest(f"AWS4{secret}".encode(), day.encode(), "sha256")
    for part in (region, service, "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    return key


def scope(day: str, region: str, service: str) -> str:
    return f"{day}/{region}/{service}/aws4_request"


def canonical_uri(path: str) -> str:
    """The path as signed: the request path encoded once more (`%3A` becomes `%253A`)."""
    return quote(path or "/", safe="/~")


def canonical_query(query: str) -> str:
    if not query:
        return ""
    pairs = [part.partition("=") for part in query.split("&") if part]
    return "&".join(f"{key}={value}" for key, _, value in sorted(pairs))


def canonical_request(
    method: str, path: str, query: str, headers: Mapping[str, str], signed: list[str], body: str
) -> str:
    lines = "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in signed)
    return "\n".join(
        (method, canonical_uri(path), canonical_query(query), lines, ";".join(signed), body)
    )


def request_signature(
    secret: str,
    region: str,
    service: str,
    date: str,
    canonical: str,
) -> str:
    string_to_sign = "\n".join(
        (
            ALGORITHM,
            date,
            scope(date[:8], region, service),
            hashlib.sha256(canonical.encode()).hexdigest(),
        )
    )
    key = signing_key(secret, date[:8], region, service)
    return hmac.digest(key, string_to_sign.encode(), "sha256").hex()


def sign_request(
    *,
    method: str,
    host: str,
    path: str,
    headers: Mapping[str, str],
    credentials: Credentials,
    region: str,
    service: str,
    when: datetime,
    payload_hash: str = STREAMING_EVENTS_PAYLOAD,
    query: str = "",
) -> tuple[dict[str, str], str]:
    """The request's headers with `host`, `x-amz-date`, `x-amz-content-sha256`, the
    session token and `authorization` added (lower-case names), and the signature."""
    date = amz_date(when)
    signed_headers = {name.lower(): value for name, value in headers.items()}
    signed_headers.update({"host": host, "x-amz-date": date, "x-amz-content-sha256": payload_hash})
    if credentials.session_token:
        signed_headers["x-amz-security-token"] = credentials.session_token
    names = sorted(name for name in signed_headers if name not in UNSIGNED_HEADERS)
    canonical = canonical_request(method, path, query, signed_headers, names, payload_hash)
    signature = request_signature(credentials.secret_access_key, region, service, date, canonical)
    signed_headers["authorization"] = (
        f"{ALGORITHM} Credential={credentials.access_key_id}/{scope(date[:8], region, service)}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return signed_headers, signature


_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/,\s]+)/(?P<day>\d{8})/(?P<region>[^/,\s]+)/"
    r"(?P<service>[^/,\s]+)/aws4_request,\s*SignedHeaders=(?P<signed>[a-z0-9;\-]+),\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)


@dataclass(frozen=True, slots=True)
class Authorization:
    access_key_id: str
    day: str
    region: str
    service: str
    signed_headers: list[str]
    signature: str


def parse_authorization(value: str) -> Authorization | None:
    match = _AUTHORIZATION.match(value)
    if match is None:
        return None
    return Authorization(
        match["key"],
        match["day"],
        match["region"],
        match["service"],
        match["signed"].split(";"),
        match["signature"],
    )


# -- event signing ------------------------------------------------------------------------


def _event_string_to_sign(
    date: str, event_scope: str, prior_signature: str, date_header: bytes, payload: bytes
) -> bytes:
    return "\n".join(
        (
            EVENT_ALGORITHM,
            date,
            event_scope,
            prior_signature,
            hashlib.sha256(date_header).hexdigest(),
            hashlib.sha256(payload).hexdigest(),
        )
    ).encode()


def event_signature(
    secret: str,
    region: str,
    service: str,
    prior_signature: str,
    timestamp_ms: int,
    payload: bytes,
) -> bytes:
    """The raw 32-byte `:chunk-signature` of an envelope carrying `payload`, dated
    `timestamp_ms`, following the hex `prior_signature`."""
    when = datetime.fromtimestamp(timestamp_ms // 1000, UTC)
    date = amz_date(when)
    date_header = encode_header(":date", Timestamp(timestamp_ms))
    string_to_sign = _event_string_to_sign(
        date, scope(date[:8], region, service), prior_signature, date_header, payload
    )
    key = signing_key(secret, date[:8], region, service)
    return hmac.digest(key, string_to_sign, "sha256")


# The envelope's two headers before their values: `:date` (timestamp) and
# `:chunk-signature` (32 bytes).
_DATE_HEADER = encode_header(":date", Timestamp(0))[:-8]
_SIGNATURE_HEADER = encode_header(":chunk-signature", bytes(32))[:-32]


class EventSigner:
    """Wraps each outgoing message in a signed envelope, chaining from the request.

    On the audio path (one envelope per 20 ms frame): the date, scope and key change at
    most once a second, and the headers are joined from pre-encoded parts."""

    __slots__ = (
        "_credentials",
        "_date",
        "_key",
        "_prior",
        "_region",
        "_scope",
        "_second",
        "_service",
    )

    def __init__(
        self, credentials: Credentials, region: str, service: str, seed_signature: str
    ) -> None:
        self._credentials = credentials
        self._region = region
        self._service = service
        self._prior = seed_signature
        self._second = -1
        self._date = self._scope = ""
        self._key = b""

    @property
    def prior_signature(self) -> str:
        return self._prior

    def envelope(self, payload: bytes, timestamp_ms: int) -> bytes:
        second = timestamp_ms // 1000
        if second != self._second:
            self._second = second
            self._date = amz_date(datetime.fromtimestamp(second, UTC))
            day = self._date[:8]
            self._scope = scope(day, self._region, self._service)
            self._key = signing_key(
                self._credentials.secret_access_key, day, self._region, self._service
            )
        date_header = _DATE_HEADER + timestamp_ms.to_bytes(8, "big", signed=True)
        string_to_sign = _event_string_to_sign(
            self._date, self._scope, self._prior, date_header, payload
        )
        signature = hmac.digest(self._key, string_to_sign, "sha256")
        self._prior = signature.hex()
        return encode_message(date_header + _SIGNATURE_HEADER + signature, payload)
