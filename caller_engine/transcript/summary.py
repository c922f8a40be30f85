"""Post-call structured summary through Chat Completions (JSON-schema structured output),
or through Gemini's `generateContent` (`GeminiSummarizer`: a JSON response schema, the same
fields), behind one `SummaryModel` interface.

One POST to `{OPENAI_BASE_URL}/chat/completions` over the application's aiohttp stack: the
`openai` SDK would cost the server about 45 MB of memory for its types and a few ms of CPU per
summary for a request this small. Retries follow the SDK's policy: up to two more attempts on
timeouts, connection errors, 408, 409, 429 and 5xx, after `retry-after` (when the service
sends one, up to a limit) or an exponential back-off.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import aiohttp
import orjson

from caller_engine.calls.result import Summary
from caller_engine.failures import describe

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))
MAX_RETRIES = 2
BACKOFF_S = 0.5
MAX_RETRY_AFTER_S = 8.0

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


def summary_prompt(full_text: str, tool_lines: list[str]) -> str:
    content = "Transcript:\n" + (full_text or "(nothing was said)")
    if tool_lines:
        content += "\n\nTool calls:\n" + "\n".join(tool_lines)
    return content


class SummaryError(Exception):
    """The service refused the request, failed, or answered something unusable."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code  # the HTTP status of a refusal or failure


class UnusableSummary(SummaryError, ValueError):
    """The service answered, but not with a summary of the documented form."""


def _retry_after(headers: Any) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            return None
        return seconds if 0 <= seconds <= MAX_RETRY_AFTER_S else None
    return None


def _error_message(status: int, body: bytes) -> str:
    try:
        error = orjson.loads(body).get("error") or {}
        message = str(error.get("message") or "")
    except (orjson.JSONDecodeError, AttributeError):
        message = body[:200].decode(errors="replace")
    return f"HTTP {status}: {message}" if message else f"HTTP {status}"


class Summarizer:
    def __init__(
        self,
        api_key: str | None,
        model: str,
        *,
        base_url: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = (base_url or DEFAULT_BASE_URL).rstrip("/") + "/chat/completions"
        self.headers = {"Authorization": f"Bearer {api_key or ''}"}
        self.model = model
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None

    def request_body(self, full_text: str, tool_lines: list[str]) -> dict[str, Any]:
        content = summary_prompt(full_text, tool_lines)
        return {
            "model": self.model,
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": content},
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "call_summary", "schema": SUMMARY_SCHEMA, "strict": True},
            },
        }

    async def summarize(self, full_text: str, tool_lines: list[str]) -> Summary:
        body = orjson.dumps(self.request_body(full_text, tool_lines))
        answer = await self._post(body)
        try:
            message = answer["choices"][0]["message"]
            content = message.get("content") or ""
            if not content and message.get("refusal"):
                raise SummaryError(f"the model refused: {message['refusal']}")
            return Summary.model_validate(orjson.loads(content))
        except SummaryError:
            raise
        except Exception as exc:
            raise UnusableSummary("the completion is not a valid summary") from exc

    async def _post(self, body: bytes) -> dict[str, Any]:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                headers=self.headers | {"Content-Type": "application/json"}
            )
        failure, status = "", None
        for attempt in range(MAX_RETRIES + 1):
            wait: float | None = None
            try:
                async with self._http.post(self.url, data=body, timeout=self.timeout) as resp:
                    raw = await resp.read()
                    if resp.status == 200:
                        answer: dict[str, Any] = orjson.loads(raw)
                        return answer
                    failure = _error_message(resp.status, raw)
                    status = resp.status
                    if resp.status not in RETRY_STATUSES:
                        raise SummaryError(failure, status)
                    wait = _retry_after(resp.headers)
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
                failure, status = f"request failed: {describe(exc)}", None
            if attempt < MAX_RETRIES:
                await asyncio.sleep(wait if wait is not None else BACKOFF_S * 2**attempt)
        raise SummaryError(failure, status)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


class GeminiSummarizer:
    """Gemini `models/{model}:generateContent` with `responseJsonSchema` (the same schema)."""

    def __init__(self, *, api_key: str, model: str, base_url: str, timeout: float = 30.0) -> None:
        self.url = f"{base_url.rstrip('/')}/v1beta/models/{model}:generateContent"
        self.headers = {"x-goog-api-key": api_key, "Content-Type": "application/json"}
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None

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
        if self._http is None:
            self._http = aiohttp.ClientSession(headers=self.headers)
        body = orjson.dumps(self.request_body(full_text, tool_lines))
        try:
            async with self._http.post(self.url, data=body, timeout=self.timeout) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SummaryError(f"request failed: {exc!r}") from exc
        if status != 200:
            raise SummaryError(_error_message(status, raw))
        try:
            return Summary.model_validate(orjson.loads(_candidate_text(orjson.loads(raw))))
        except SummaryError:
            raise
        except Exception as exc:
            raise SummaryError(f"unusable answer: {exc!r}") from exc


def _candidate_text(answer: Any) -> str:
    """The first candidate's text parts, joined; SummaryError when there is none."""
    try:
        parts = answer["candidates"][0]["content"]["parts"]
        text = "".join(str(part.get("text", "")) for part in parts)
    except (KeyError, IndexError, TypeError, AttributeError):
        text = ""
    if not text:
        raise SummaryError("no candidate text in the answer")
    return text
