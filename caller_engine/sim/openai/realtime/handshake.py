"""What the live server does with a connection it will not serve.

The WebSocket upgrade always completes; the refusal arrives as one `error` event followed
by a close whose reason is `<error type>.<error code>`: 3000 for credentials and account
problems, 4000 for a request the GA interface does not accept (an `OpenAI-Beta` header,
no `?model=`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from caller_engine.sim.openai.realtime.protocol import Rejection


@dataclass(frozen=True)
class Refusal:
    rejection: Rejection
    close_code: int
    violation: str | None

    @property
    def close_reason(self) -> str:
        return f"{self.rejection.type}.{self.rejection.code}"


def header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    return next((value for key, value in headers.items() if key.lower() == lowered), None)


def presented_key(headers: Mapping[str, str], auth_header: str) -> str:
    """The key from `Authorization: Bearer <key>`, or the raw value of another header."""
    value = header(headers, auth_header) or ""
    if auth_header.lower() == "authorization":
        return value[7:] if value.startswith("Bearer ") else ""
    return value


def refusal(
    headers: Mapping[str, str],
    model: str,
    *,
    api_key: str,
    auth_header: str,
    fatal_on_connect: str | None,
) -> Refusal | None:
    beta = header(headers, "OpenAI-Beta")
    if beta is not None:
        message = (
            "The beta API shape is no longer supported. Remove the OpenAI-Beta header and "
            "use the GA event shapes."
        )
        violation = f"handshake: 'OpenAI-Beta: {beta}' header selects the retired beta interface"
        return Refusal(Rejection("beta_api_shape_disabled", message), 4000, violation)
    if not model:
        message = (
            "You must provide a model parameter, for example "
            "wss://api.openai.com/v1/realtime?model=gpt-realtime"
        )
        violation = "handshake: no ?model= in the URL"
        return Refusal(Rejection("missing_model", message), 4000, violation)
    key = presented_key(headers, auth_header)
    if key != api_key:
        violation = f"handshake: API key missing or wrong in the '{auth_header}' header"
        return Refusal(invalid_key(key), 3000, violation)
    if fatal_on_connect:
        return Refusal(account_problem(fatal_on_connect), 3000, None)
    return None


def mask(key: str) -> str:
    return f"{key[:4]}{'*' * (len(key) - 8)}{key[-4:]}" if len(key) > 8 else "****"


def invalid_key(key: str) -> Rejection:
    if not key:
        message = (
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
    else:
        message = (
            f"Incorrect API key provided: {mask(key)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys."
        )
    return Rejection("invalid_api_key", message)


def account_problem(code: str) -> Rejection:
    if code == "insufficient_quota":
        message = "You exceeded your current quota, please check your plan and billing details."
        return Rejection(code, message, type="insufficient_quota")
    if code == "invalid_api_key":
        return invalid_key("sk-revoked-0000000000")
    return Rejection(code, f"The session could not be started ({code}).")
