"""Post-call structured summary: OpenAI Chat Completions (JSON-schema structured output) or
Gemini `generateContent` (a JSON response schema), behind one `SummaryModel` interface.
Both are asked the same question for the same fields (`SUMMARY_SCHEMA`)."""

from __future__ import annotations

from typing import Any, Protocol

import aiohttp
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


class SummaryModel(Protocol):
    async def summarize(self, full_text: str, tool_lines: list[str]) -> Summary: ...

    async def close(self) -> None: ...


class SummaryError(Exception):
    """The summary model refused or gave no usable answer (one sentence)."""


def summary_prompt(full_text: str, tool_lines: list[str]) -> str:
    content = "Transcript:\n" + (full_text or "(nothing was said)")
    if tool_lines:
        content += "\n\nTool calls:\n" + "\n".join(tool_lines)
    return content


class Summarizer:
    """OpenAI Chat Completions with a strict JSON schema."""

    def __init__(self, client: AsyncOpenAI, model: str, *, timeout: float = 30.0) -> None:
        self.client = client
        self.model = model
        self.timeout = timeout

    async def close(self) -> None:
        """The client belongs to the application, which closes it."""

    async def summarize(self, full_text: str, tool_lines: list[str]) -> Summary:
        content = summary_prompt(full_text, tool_lines)
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


class GeminiSummarizer:
    """Gemini `models/{model}:generateContent` with `responseJsonSchema` (the same schema)."""

    def __init__(self, *, api_key: str, model: str, base_url: str, timeout: float = 30.0) -> None:
        self.api_key = api_key
        self.model = model
        self.url = f"{base_url.rstrip('/')}/v1beta/models/{model}:generateContent"
        self.timeout = timeout
        self._http: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def request_body(self, full_text: str, tool_lines: list[str]) -> dict[str, Any]:
        return {
            "systemInstruction": {"parts": [{"text": SYSTEM}]},
            "contents": [
                {"role": "user", "parts": [{"text": summary_prompt(full_text, tool_lines)}]}
            ],
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseJsonSchema": SUMMARY_SCHEMA,
            },
        }

    async def summarize(self, full_text: str, tool_lines: list[str]) -> Summary:
        body = orjson.dumps(self.request_body(full_text, tool_lines))
        headers = {"x-goog-api-key": self.api_key, "Content-Type": "application/json"}
        async with self._session().post(self.url, data=body, headers=headers) as resp:
            raw = await resp.read()
            status = resp.status
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise SummaryError(f"Gemini generateContent answered {status} without JSON") from None
        if status != 200:
            error = answer.get("error") if isinstance(answer, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            detail = message or raw[:200].decode(errors="replace")
            raise SummaryError(f"Gemini generateContent answered {status}: {detail}")
        return Summary.model_validate(orjson.loads(_candidate_text(answer)))


def _candidate_text(answer: Any) -> str:
    """The first candidate's text parts, joined; SummaryError when there is none."""
    try:
        parts = answer["candidates"][0]["content"]["parts"]
        text = "".join(str(part.get("text", "")) for part in parts)
    except (KeyError, IndexError, TypeError, AttributeError):
        text = ""
    if not text:
        raise SummaryError("Gemini generateContent gave no candidate text")
    return text
