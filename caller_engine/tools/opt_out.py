"""`opt_out`: the callee asks not to be called again. Their number goes on the do-not-call
list at once; the agent confirms, and the call ends after that reply."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from caller_engine.tools.registry import Tool, ToolContext, ToolOutput


class OptOutArgs(BaseModel):
    model_config = ConfigDict(extra="ignore")
    reason: str = Field("", max_length=300, description="what the person said, briefly")


async def _opt_out(args: OptOutArgs, ctx: ToolContext) -> ToolOutput:
    if ctx.opt_out is None or not ctx.callee:
        return {"error": "the number of this call is unknown; it could not be listed"}
    await ctx.opt_out(args.reason)
    return {
        "status": "listed",
        "message": (
            "This number is on the do-not-call list and will not be called again. Confirm "
            "that politely in one short sentence and say goodbye; the call ends after that."
        ),
    }


OPT_OUT = Tool(
    name="opt_out",
    description=(
        "Call at once when the person asks not to be called again (stop calling, take me off "
        "your list, do not call). Their number is put on the do-not-call list; then confirm "
        "politely and say goodbye: the call ends after your reply."
    ),
    args=OptOutArgs,
    handler=_opt_out,
    timeout=10.0,
)
