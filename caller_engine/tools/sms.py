"""`send_sms`: a text message from TWILIO_PHONE_NUMBER through the async Twilio client.

By default the only allowed recipient is the number being called, so a caller cannot make
the agent text other people; SMS_ALLOW_ANY_RECIPIENT lifts that.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from caller_engine.config import E164
from caller_engine.telephony.rest import TelephonyError, TwilioGateway
from caller_engine.tools.failures import refusal, twilio_failure
from caller_engine.tools.registry import Tool, ToolContext, ToolOutput

# Four concatenated GSM-7 segments: enough for a confirmation, short enough to stay cheap.
SMS_MAX_CHARS = 612
_FORMATTING = re.compile(r"[\s().-]")


class SmsArgs(BaseModel):
    to: str | None = Field(
        None,
        max_length=32,
        description="Recipient in E.164 form (+15551234567); defaults to the number on this call.",
    )
    message: str = Field(min_length=1, max_length=SMS_MAX_CHARS, description="Message text.")


def normalize_number(value: str) -> str:
    """Drop spaces, dots, dashes and parentheses; E.164 must still be checked."""
    return _FORMATTING.sub("", value)


class SmsTool:
    def __init__(self, gateway: TwilioGateway, *, allow_any_recipient: bool = False) -> None:
        self._gateway = gateway
        self._allow_any = allow_any_recipient

    def tool(self) -> Tool:
        who = (
            "any E.164 number"
            if self._allow_any
            else "the person on this call only (leave 'to' empty)"
        )
        return Tool(
            "send_sms",
            f"Send a short text message to {who}, for example the booked date and time.",
            SmsArgs,
            self.send_sms,
            timeout=15.0,
        )

    async def send_sms(self, args: SmsArgs, ctx: ToolContext) -> ToolOutput:
        to = normalize_number(args.to) if args.to else ctx.callee
        body = args.message.strip()
        if not E164.match(to):
            return refusal(f"'{args.to}' is not a phone number in E.164 form like +15551234567.")
        if not self._allow_any and to != ctx.callee:
            ctx.log.warning("send_sms: refused a recipient other than the callee")
            return refusal("Text messages can only be sent to the number of this call.")
        if not body:
            return refusal("The text message is empty.")
        try:
            sid = await self._gateway.send_sms(to, body)
        except TelephonyError as exc:
            return twilio_failure(ctx, "send_sms", exc)
        ctx.log.bind(messageSid=sid).info("sms sent")
        return {"status": "sent", "messageSid": sid}
