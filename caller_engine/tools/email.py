"""`send_email`: Gmail `users.messages.send` as the impersonated Workspace user.

The RFC 2822 message is built with the standard library and sent base64url-encoded in the
`raw` field. Needs domain-wide delegation of the gmail.send scope to the service account.
"""

from __future__ import annotations

import base64
import re
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr, formatdate, make_msgid
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from caller_engine.tools.failures import google_failure, refusal
from caller_engine.tools.google_errors import GoogleApiError
from caller_engine.tools.registry import Tool, ToolContext, ToolOutput

if TYPE_CHECKING:
    from caller_engine.tools.google_client import GoogleApis

EMAIL_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
SUBJECT_MAX = 200
BODY_MAX = 10_000


def is_email_address(value: str) -> bool:
    return len(value) <= 254 and EMAIL_ADDRESS.match(value) is not None


class EmailArgs(BaseModel):
    to: str = Field(max_length=254, description="Recipient email address.")
    subject: str = Field(min_length=1, max_length=SUBJECT_MAX, description="Subject line.")
    body: str = Field(min_length=1, max_length=BODY_MAX, description="Plain-text message body.")


def build_message(sender: str, sender_name: str | None, to: str, subject: str, body: str) -> str:
    """An RFC 2822 message, base64url-encoded for Gmail's `raw` field."""
    message = EmailMessage(policy=SMTP)
    message["From"] = formataddr((sender_name, sender)) if sender_name else sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(body)
    return base64.urlsafe_b64encode(message.as_bytes()).decode("ascii")


class EmailTool:
    def __init__(self, google: GoogleApis, sender: str, sender_name: str | None = None) -> None:
        self._google = google
        self._sender = sender
        self._sender_name = sender_name

    def tool(self) -> Tool:
        return Tool(
            "send_email",
            "Send a short plain-text email, for example a booking confirmation, when the "
            "caller asks for one and has spelled out their address.",
            EmailArgs,
            self.send_email,
            timeout=12.0,
        )

    async def send_email(self, args: EmailArgs, ctx: ToolContext) -> ToolOutput:
        to = args.to.strip()
        subject = " ".join(args.subject.split())
        if not is_email_address(to):
            return refusal(f"'{args.to}' is not a valid email address.")
        if not subject or not args.body.strip():
            return refusal("An email needs a subject and a body.")
        raw = build_message(self._sender, self._sender_name, to, subject, args.body)
        try:
            sent = await self._google.gmail(
                lambda s: s.users().messages().send(userId="me", body={"raw": raw})
            )
        except GoogleApiError as exc:
            return google_failure(ctx, "send_email", "email service", exc)
        message_id = str(sent.get("id") or "")
        ctx.log.bind(messageId=message_id).info("email sent")
        return {"status": "sent", "messageId": message_id}
