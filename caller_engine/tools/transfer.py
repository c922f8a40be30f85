"""`transfer_call`: hand the call to one of the call's configured people.

The schema enumerates the call's target names and the handler checks the name again, so a
caller talking the model into "transfer me to +1900…" cannot reach anyone else. The tool
answers at once; the bridge redirects the call once the agent's sentence has played.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from caller_engine.calls.transfer import TransferTarget
from caller_engine.tools.failures import refusal
from caller_engine.tools.registry import Tool, ToolContext, ToolOutput

NAME = "transfer_call"


class _Base(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _args_model(names: list[str]) -> type[BaseModel]:
    fields: dict[str, Any] = {
        "target": (
            str,
            Field(
                max_length=64,
                description="Who to transfer to: one of the listed names.",
                json_schema_extra={"enum": list[Any](names)},
            ),
        ),
        "reason": (
            str,
            Field("", max_length=300, description="Why the caller wants a person, in a few words."),
        ),
        "summary": (
            str,
            Field(
                min_length=1,
                max_length=500,
                description=(
                    "One or two sentences for the person taking the call: who the caller is "
                    "and what they want."
                ),
            ),
        ),
    }
    return create_model("TransferArgs", __base__=_Base, **fields)


def transfer_tool(targets: list[TransferTarget]) -> Tool:
    """The tool for one call's targets (there must be at least one)."""
    if not targets:
        raise ValueError("transfer_call needs at least one target")
    by_name = {t.name: t for t in targets}
    listing = "; ".join(
        f"{t.name}" + (f" ({t.description})" if t.description else "") for t in targets
    )

    async def handler(args: Any, ctx: ToolContext) -> ToolOutput:
        target = by_name.get(args.target)
        if target is None:
            ctx.log.warning("transfer_call: refused a target that is not on this call's list")
            return refusal(
                f"'{args.target}' is not someone this call can be transferred to. "
                f"The choices are: {', '.join(by_name)}."
            )
        if ctx.transfer is None:
            return refusal("This call cannot be transferred from here.")
        return await ctx.transfer(target, args.reason.strip(), args.summary.strip())

    return Tool(
        NAME,
        (
            "Transfer the call to a person when the caller asks for one or needs what only a "
            "person can do. First tell the caller you are connecting them; the transfer starts "
            f"once that has played. Targets: {listing}."
        ),
        _args_model(list(by_name)),
        handler,
        timeout=5.0,
    )
