"""`end_call`: the agent ends the call once its goodbye has played."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from caller_engine.tools.registry import Tool, ToolContext, ToolOutput


class EndCallArgs(BaseModel):
    model_config = ConfigDict(extra="ignore")
    reason: str = Field("", max_length=200, description="why the call is ending")


async def _end_call(args: EndCallArgs, ctx: ToolContext) -> ToolOutput:
    if ctx.end_call is None:
        return {"error": "this call cannot be ended from here"}
    await ctx.end_call()
    ctx.log.info("agent ended the call: {}", args.reason or "-")
    return {"status": "ending", "message": "The call will end after your goodbye has played."}


END_CALL = Tool(
    name="end_call",
    description=(
        "Hang up the phone. Say a short goodbye first; the call ends once it has played. "
        "Use when the conversation is complete or the person asks to end it."
    ),
    args=EndCallArgs,
    handler=_end_call,
    timeout=5.0,
)
