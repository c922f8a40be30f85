"""Post-call structured summary through Chat Completions (JSON-schema structured output)."""

from __future__ import annotations

import orjson
from openai import AsyncOpenAI

from caller_engine.calls.result import Summary

SUMMARY_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["intent", "outcome", "nextAction", "scheduledDate", "sentiment"],
    "properties": {
        "intent": {"type": "string", "description": "why the callee engaged, in a few words"},
        "outcome": {"type": "string", "description": "what was achieved on the call"},
        "nextAction": {"type": "string", "description": "what should happen next"},
        "scheduledDate": {
            "type": ["string", "null"],
            "description": "ISO date-time of a booked appointment, or null",
        },
        "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
    },
}

SYSTEM = (
    "You summarize phone calls between an AI receptionist (Agent) and a person (User). "
    "Answer only with the requested JSON."
)


class Summarizer:
    def __init__(self, client: AsyncOpenAI, model: str, *, timeout: float = 30.0) -> None:
        self.client = client
        self.model = model
        self.timeout = timeout

    async def summarize(self, full_text: str, tool_lines: list[str]) -> Summary:
        content = "Transcript:\n" + (full_text or "(nothing was said)")
        if tool_lines:
            content += "\n\nTool calls:\n" + "\n".join(tool_lines)
        completion = await self.client.chat.completions.create(
            model=self.model,
            messages=[
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": content},
            ],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "call_summary", "schema": SUMMARY_SCHEMA, "strict": True},
            },
            timeout=self.timeout,
        )
        message = completion.choices[0].message.content or ""
        return Summary.model_validate(orjson.loads(message))
