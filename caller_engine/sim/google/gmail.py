"""Gmail v1 `users.messages.send`: decodes the base64url RFC 2822 message and keeps it.

Sending needs a token for an impersonated user (domain-wide delegation, `sub` claim): a
service account without one gets Gmail's `failedPrecondition`. `userId` must be `me` or the
impersonated address.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import orjson
from aiohttp import web

from caller_engine.sim.google.auth import Grant
from caller_engine.sim.google.errors import api_error

SCOPES_SEND = frozenset(
    {
        "https://mail.google.com/",
        "https://www.googleapis.com/auth/gmail.modify",
        "https://www.googleapis.com/auth/gmail.compose",
        "https://www.googleapis.com/auth/gmail.send",
    }
)

Authorize = Callable[[web.Request, frozenset[str]], Grant | web.Response]


@dataclass(frozen=True)
class SentMessage:
    id: str
    thread_id: str
    user: str
    raw: bytes
    message: EmailMessage

    def header(self, name: str) -> str:
        return str(self.message.get(name, ""))

    @property
    def text(self) -> str:
        """The plain-text body with line endings normalized to LF."""
        part = self.message.get_body(preferencelist=("plain",))
        content = str(part.get_content()) if part is not None else ""
        return content.replace("\r\n", "\n")


def decode_raw(raw: str) -> bytes:
    """Gmail accepts base64url with or without padding."""
    text = raw.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class GmailApi:
    def __init__(self, sent: list[SentMessage], authorize: Authorize) -> None:
        self.sent = sent
        self._authorize = authorize

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/gmail/v1/users/{userId}/messages/send", self.send)

    async def send(self, request: web.Request) -> web.Response:
        grant = self._authorize(request, SCOPES_SEND)
        if isinstance(grant, web.Response):
            return grant
        if grant.subject is None:
            return api_error(400, "failedPrecondition", "Precondition check failed.")
        user_id = request.match_info["userId"]
        if user_id not in ("me", grant.subject):
            return api_error(403, "forbidden", f"Delegation denied for {grant.subject}")
        try:
            body: Any = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError:
            return api_error(400, "parseError", "Parse Error")
        raw = body.get("raw") if isinstance(body, dict) else None
        if not isinstance(raw, str) or not raw:
            return api_error(
                400,
                "invalidArgument",
                "'raw' RFC822 payload message string or uploading message via /upload/* URL "
                "required",
            )
        try:
            data = decode_raw(raw)
        except (binascii.Error, ValueError):
            return api_error(400, "invalidArgument", "Invalid value for ByteString: raw")
        message = BytesParser(policy=policy.default).parsebytes(data)
        if not isinstance(message, EmailMessage):
            return api_error(400, "invalidArgument", "Invalid message")
        if not any(message.get(h) for h in ("To", "Cc", "Bcc")):
            return api_error(400, "invalidArgument", "Recipient address required")
        message_id = secrets.token_hex(8)
        self.sent.append(SentMessage(message_id, message_id, grant.subject, data, message))
        answer = {"id": message_id, "threadId": message_id, "labelIds": ["SENT"]}
        return web.json_response(answer, dumps=lambda o: orjson.dumps(o).decode())
