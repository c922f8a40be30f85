"""Result webhook signatures: `Caller-Engine-Signature: t=<unix seconds>,v1=<hex>`.

v1 is HMAC-SHA256 keyed with RESULT_WEBHOOK_SECRET over the bytes "<t>.<raw body>", the
scheme Stripe uses. Several v1 entries may appear (during a secret rotation); one match is
enough. Pure functions.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "Caller-Engine-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
DEFAULT_TOLERANCE = 300.0


def compute_v1(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={compute_v1(secret, timestamp, body)}"


def parse_header(header: str) -> tuple[int | None, list[str]]:
    """(t, [v1 signatures]); t is None when missing or not an integer."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return None, []
        elif key == "v1" and value:
            signatures.append(value)
    return timestamp, signatures


def verify(
    secret: str, header: str | None, body: bytes, now: float, tolerance: float = DEFAULT_TOLERANCE
) -> bool:
    """True when `header` signs `body` with `secret` and its time is within `tolerance`."""
    if not header:
        return False
    timestamp, signatures = parse_header(header)
    if timestamp is None or not signatures or abs(now - timestamp) > tolerance:
        return False
    expected = compute_v1(secret, timestamp, body)
    return any(hmac.compare_digest(expected, s) for s in signatures)
