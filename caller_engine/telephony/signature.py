"""Request authenticity: Twilio webhook signatures and per-call stream tokens. Pure functions."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

from twilio.request_validator import RequestValidator


def _signed_params(params: Mapping[str, str]) -> str:
    """What Twilio signs after the URL: each parameter's name and value, names sorted
    (case-sensitive), a repeated name's distinct values sorted."""
    parts: list[str] = []
    getall = getattr(params, "getall", None)
    for name in sorted(set(params)):
        values = getall(name) if getall is not None else [params[name]]
        parts.extend(name + value for value in sorted(set(values)))
    return "".join(parts)


def _signature(key: bytes, url: str, signed_params: str) -> bytes:
    digest = hmac.new(key, (url + signed_params).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest)


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """X-Twilio-Signature of a request to `url` with the form `params`: base64 of the
    HMAC-SHA1 of the signed string, keyed with the auth token."""
    return _signature(auth_token.encode(), url, _signed_params(params)).decode()


def _port_variants(url: str) -> tuple[str, ...]:
    """The URL as Twilio may have signed it: as given, and with or without the scheme's
    default port (a proxy in front can add or drop it)."""
    parts = urlsplit(url)
    if parts.port is not None:
        host = parts.netloc.rsplit(":", 1)[0]
        return url, urlunsplit(parts._replace(netloc=host))
    port = 443 if parts.scheme in ("https", "wss") else 80
    return url, urlunsplit(parts._replace(netloc=f"{parts.netloc}:{port}"))


def twilio_signature_valid(
    auth_token: str, urls: str | Iterable[str], params: Mapping[str, str], signature: str | None
) -> bool:
    """True when `signature` (X-Twilio-Signature) signs one of `urls` and the form `params`.

    Each URL is tried with and without its port. WebSocket upgrades are signed with empty
    params; since which URL form Twilio signs there is not documented, the URL without its
    query is tried as well.
    """
    if not signature:
        return False
    candidates = [urls] if isinstance(urls, str) else list(urls)
    if not params:
        for url in list(candidates):
            parts = urlsplit(url)
            if parts.query:
                candidates.append(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")))
    wanted = signature.encode()
    key = auth_token.encode()
    signed_params = _signed_params(params)
    for url in candidates:
        for variant in _port_variants(url):
            if hmac.compare_digest(_signature(key, variant, signed_params), wanted):
                return True
    return False


def sign_twilio_request(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The X-Twilio-Signature Twilio would send, computed by Twilio's own SDK (the emulators
    sign with it, so every test checks our validation against Twilio's implementation)."""
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
