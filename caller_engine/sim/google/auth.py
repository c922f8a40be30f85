"""Google's OAuth 2.0 token endpoint for service accounts (JWT bearer grant), emulated.

The assertion must be an RS256 JWT signed with the private key of a registered service
account, addressed (`aud`) to Google's token endpoint (or this one), short-lived, and carry
a `scope`. With a `sub` claim (domain-wide delegation) every requested scope must have been
delegated to the account. Issued access tokens remember the account, scopes and subject
so the API handlers can check them.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# google-auth always addresses the assertion to Google's endpoint, whatever token_uri is.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
MAX_LIFETIME = 3600
CLOCK_SKEW = 300
TOKEN_LIFETIME = 3599


class GrantRefused(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    client_email: str
    public_key: rsa.RSAPublicKey
    delegated_scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class Grant:
    access_token: str
    client_email: str
    scopes: frozenset[str]
    subject: str | None
    expires_at: float

    @property
    def principal(self) -> str:
        """Whose data the token acts on: the impersonated user, else the account itself."""
        return self.subject or self.client_email


def load_public_key(key: rsa.RSAPublicKey | str | bytes) -> rsa.RSAPublicKey:
    if isinstance(key, rsa.RSAPublicKey):
        return key
    loaded = serialization.load_pem_public_key(key.encode() if isinstance(key, str) else key)
    if not isinstance(loaded, rsa.RSAPublicKey):
        raise ValueError("service account keys are RSA keys")
    return loaded


def _b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def decode_jwt(assertion: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """Header, claims, signing input and signature of a compact JWT (not yet verified)."""
    parts = assertion.split(".")
    if len(parts) != 3:
        raise GrantRefused(400, "invalid_grant", "Invalid JWT: not a compact JWS.")
    try:
        header = orjson.loads(_b64url(parts[0]))
        claims = orjson.loads(_b64url(parts[1]))
        signature = _b64url(parts[2])
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise GrantRefused(400, "invalid_grant", "Invalid JWT: unreadable segments.") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise GrantRefused(400, "invalid_grant", "Invalid JWT: segments are not objects.")
    return header, claims, f"{parts[0]}.{parts[1]}".encode(), signature


def verify_rs256(key: rsa.RSAPublicKey, signing_input: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


class TokenIssuer:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.accounts: dict[str, ServiceAccount] = {}
        self.grants: dict[str, Grant] = {}
        self.issued = 0

    def add_account(
        self,
        client_email: str,
        public_key: rsa.RSAPublicKey | str | bytes,
        delegated_scopes: Iterable[str] = (),
    ) -> None:
        self.accounts[client_email] = ServiceAccount(
            client_email, load_public_key(public_key), frozenset(delegated_scopes)
        )

    def issue(self, form: Mapping[str, str], audience: str) -> dict[str, Any]:
        """Answer a token request or raise GrantRefused."""
        if form.get("grant_type") != JWT_BEARER:
            raise GrantRefused(
                400, "unsupported_grant_type", f"Invalid grant_type: {form.get('grant_type')}"
            )
        header, claims, signing_input, signature = decode_jwt(form.get("assertion", ""))
        if header.get("alg") != "RS256":
            raise GrantRefused(400, "invalid_grant", "Invalid JWT: algorithm must be RS256.")
        account = self.accounts.get(str(claims.get("iss", "")))
        if account is None:
            raise GrantRefused(400, "invalid_grant", "Invalid grant: account not found")
        if not verify_rs256(account.public_key, signing_input, signature):
            raise GrantRefused(400, "invalid_grant", "Invalid JWT Signature.")
        if claims.get("aud") not in (GOOGLE_TOKEN_AUDIENCE, audience):
            raise GrantRefused(400, "invalid_grant", "Invalid JWT: audience mismatch.")
        self._check_times(claims)
        scopes = frozenset(str(claims.get("scope") or "").split())
        if not scopes:
            raise GrantRefused(400, "invalid_scope", "Empty or missing scope not allowed.")
        subject = claims.get("sub")
        if subject is not None and not scopes <= account.delegated_scopes:
            raise GrantRefused(
                401,
                "unauthorized_client",
                "Client is unauthorized to retrieve access tokens using this method, or "
                "client not authorized for any of the scopes requested.",
            )
        token = "ya29.emu-" + secrets.token_urlsafe(24)
        self.grants[token] = Grant(
            token,
            account.client_email,
            scopes,
            str(subject) if subject is not None else None,
            self._clock() + TOKEN_LIFETIME,
        )
        self.issued += 1
        return {"access_token": token, "expires_in": TOKEN_LIFETIME, "token_type": "Bearer"}

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self._clock()
        iat, exp = claims.get("iat"), claims.get("exp")
        if (
            not isinstance(iat, int | float)
            or not isinstance(exp, int | float)
            or exp - iat > MAX_LIFETIME
            or iat > now + CLOCK_SKEW
            or exp < now - CLOCK_SKEW
        ):
            raise GrantRefused(
                400,
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                "reasonable timeframe. Check your iat and exp values in the JWT claim.",
            )

    def grant_for(self, authorization: str | None) -> Grant | None:
        """The live grant behind an `Authorization: Bearer` header."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        grant = self.grants.get(authorization[7:].strip())
        if grant is None or grant.expires_at <= self._clock():
            return None
        return grant

    def revoke_all(self) -> None:
        """Forget every issued token (the next API call answers 401 and the client refreshes)."""
        self.grants.clear()
