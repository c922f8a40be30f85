"""Request authenticity: Twilio webhook signatures and per-call stream tokens. Pure functions."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from twilio.request_validator import RequestValidator


def twilio_signature_valid(
    auth_token: str, url: str, params: Mapping[str, str], signature: str | None
) -> bool:
    """True when `signature` (X-Twilio-Signature) signs `url` and the form `params`.

    The SDK's validator tries the URL with and without its port. WebSocket upgrades are
    signed with empty params; since which URL form Twilio signs there is not documented,
    the URL without its query is tried as well.
    """
    if not signature:
        return False
    validator = RequestValidator(auth_token)
    if validator.validate(url, params, signature):
        return True
    parts = urlsplit(url)
    if parts.query and not params:
        bare = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        return bool(validator.validate(bare, {}, signature))
    return False


def sign_twilio_request(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The X-Twilio-Signature Twilio would send (used by the emulators)."""
    return str(RequestValidator(auth_token).compute_signature(url, params))


def stream_token(secret: bytes, call_sid: str, callback_id: str) -> str:
    """Per-call token carried as a TwiML `<Parameter>`: binds the stream to its call."""
    msg = f"{call_sid}\x00{callback_id}".encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()[:32]


def stream_token_valid(secret: bytes, call_sid: str, callback_id: str, token: str) -> bool:
    return hmac.compare_digest(stream_token(secret, call_sid, callback_id), token)


def transfer_token(secret: bytes, call_sid: str, callback_id: str) -> str:
    """Per-call token in the whisper, screen and dial-action URLs of a transfer."""
    msg = f"transfer\x00{call_sid}\x00{callback_id}".encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()[:32]


def transfer_token_valid(secret: bytes, call_sid: str, callback_id: str, token: str) -> bool:
    return hmac.compare_digest(transfer_token(secret, call_sid, callback_id), token)
