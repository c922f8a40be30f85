"""Emulator of OpenAI's Chat Completions endpoint (POST /v1/chat/completions).

The real `openai.AsyncOpenAI(base_url=url + "/v1", api_key=...)` client works against it.
It checks the bearer key (401 `invalid_api_key`), validates the request like the service
(model, messages, roles, `response_format` including strict JSON schemas), and answers a
`chat.completion` whose content, for a `json_schema` response format, is JSON valid
against the requested schema with values taken from cues in the conversation (see
`json_schema_fill`). `fail_next` injects error answers (e.g. 429, 500) one request at a
time; every request body is kept in `requests`.

Streaming (`stream: true`) is not emulated and is refused with a 400.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from caller_engine.sim import json_schema_fill

ROLES = ("system", "assistant", "user", "function", "tool", "developer")
FORMAT_TYPES = ("text", "json_object", "json_schema")
SCHEMA_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
KNOWN_PARAMETERS = frozenset(
    {
        "model", "messages", "response_format", "temperature", "top_p", "n", "stream",
        "stream_options", "stop", "max_tokens", "max_completion_tokens", "presence_penalty",
        "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "user", "seed",
        "tools", "tool_choice", "parallel_tool_calls", "metadata", "store", "service_tier",
        "reasoning_effort", "modalities", "audio", "prediction", "web_search_options",
        "verbosity", "prompt_cache_key", "safety_identifier", "functions", "function_call",
    }
)  # fmt: skip

Reply = Callable[[dict[str, Any]], str]


class ChatRequestError(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def error_body(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def rate_limit_error() -> tuple[int, dict[str, Any]]:
    """A 429 as the service sends it for a rate limit (`fail_next` entry)."""
    message = (
        "Rate limit reached for gpt-4o-mini in organization org-emulator on requests per min "
        "(RPM): Limit 3, Used 3, Requested 1. Please try again in 20s."
    )
    return 429, error_body(message, "requests", "requests", "rate_limit_exceeded")


def server_error() -> tuple[int, dict[str, Any]]:
    """A 500 as the service sends it (`fail_next` entry)."""
    message = "The server had an error while processing your request. Sorry about that!"
    return 500, error_body(message, "server_error")


def transcript_text(messages: list[dict[str, Any]]) -> str:
    """The conversation the answer is about: every non-system message's text."""
    chosen = [m for m in messages if m.get("role") not in ("system", "developer")] or messages
    parts: list[str] = []
    for message in chosen:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [p["text"] for p in content if isinstance(p, dict) and "text" in p]
    return "\n".join(parts)


def validate_request(body: Any) -> None:
    """Raise ChatRequestError like the service's 400 answers."""
    if not isinstance(body, dict):
        raise ChatRequestError("We could not parse the JSON body of your request.")
    for name in body:
        if name not in KNOWN_PARAMETERS:
            raise ChatRequestError(f"Unrecognized request argument supplied: {name}")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise ChatRequestError("you must provide a model parameter")
    messages = body.get("messages")
    if messages is None:
        raise ChatRequestError(
            "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    if not isinstance(messages, list) or not messages:
        raise ChatRequestError(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got "
            "an empty array instead.",
            "messages",
            "empty_array",
        )
    for index, message in enumerate(messages):
        _validate_message(message, index)
    if body.get("stream"):
        raise ChatRequestError("Streaming is not emulated.", "stream", "unsupported_value")
    if "response_format" in body:
        _validate_format(body["response_format"], messages)


def _validate_message(message: Any, index: int) -> None:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise ChatRequestError(f"Invalid type for '{where}': expected an object.", where)
    role = message.get("role")
    if role is None:
        raise ChatRequestError(
            f"Missing required parameter: '{where}.role'.", f"{where}.role",
            "missing_required_parameter",
        )  # fmt: skip
    if role not in ROLES:
        supported = ", ".join(f"'{r}'" for r in ROLES[:-1]) + f", and '{ROLES[-1]}'"
        raise ChatRequestError(
            f"Invalid value: '{role}'. Supported values are: {supported}.",
            f"{where}.role",
            "invalid_value",
        )
    if "content" not in message and role != "assistant":
        raise ChatRequestError(
            f"Missing required parameter: '{where}.content'.", f"{where}.content",
            "missing_required_parameter",
        )  # fmt: skip


def _validate_format(response_format: Any, messages: list[dict[str, Any]]) -> None:
    if not isinstance(response_format, dict) or "type" not in response_format:
        raise ChatRequestError(
            "Missing required parameter: 'response_format.type'.", "response_format.type",
            "missing_required_parameter",
        )  # fmt: skip
    kind = response_format["type"]
    if kind not in FORMAT_TYPES:
        raise ChatRequestError(
            f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object', and "
            "'json_schema'.",
            "response_format.type",
            "invalid_value",
        )
    if kind == "json_object" and "json" not in str(messages).lower():
        raise ChatRequestError(
            "'messages' must contain the word 'json' in some form, to use 'response_format' "
            "of type 'json_object'.",
            "messages",
        )
    if kind != "json_schema":
        return
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        raise ChatRequestError(
            "Missing required parameter: 'response_format.json_schema'.",
            "response_format.json_schema", "missing_required_parameter",
        )  # fmt: skip
    name = spec.get("name")
    if not isinstance(name, str):
        raise ChatRequestError(
            "Missing required parameter: 'response_format.json_schema.name'.",
            "response_format.json_schema.name", "missing_required_parameter",
        )  # fmt: skip
    if not SCHEMA_NAME.match(name):
        raise ChatRequestError(
            "Invalid 'response_format.json_schema.name': string does not match pattern. "
            "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
            "response_format.json_schema.name", "invalid_value",
        )  # fmt: skip
    schema = spec.get("schema", {})
    if not isinstance(schema, dict):
        raise ChatRequestError(
            "Invalid type for 'response_format.json_schema.schema': expected an object.",
            "response_format.json_schema.schema", "invalid_type",
        )  # fmt: skip
    if spec.get("strict"):
        found = json_schema_fill.strict_problems(schema)
        if found:
            raise ChatRequestError(
                f"Invalid schema for response_format '{name}': {found[0]}", "response_format"
            )


class ChatCompletionsEmulator:
    def __init__(
        self,
        api_key: str = "sk-test",
        *,
        reply: Reply | None = None,
        structured: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self.api_key = api_key
        self.reply = reply  # content for requests without a json_schema format
        # A scripted answer to json_schema requests; used when it validates, else filled.
        self.structured = structured
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self.responses: list[dict[str, Any]] = []
        self.fail_next: list[tuple[int, dict[str, Any]]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        return app

    async def _completions(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        self.requests.append(body if isinstance(body, dict) else {"unparsed": raw.decode()})
        self.request_headers.append(dict(request.headers))
        key = request.headers.get("Authorization", "")
        if key != f"Bearer {self.api_key}":
            return _json(401, _invalid_key(key.removeprefix("Bearer ")))
        if self.fail_next:
            status, failure = self.fail_next.pop(0)
            return _json(status, failure if "error" in failure else {"error": failure})
        try:
            validate_request(body)
        except ChatRequestError as exc:
            return _json(400, error_body(exc.message, "invalid_request_error", exc.param, exc.code))
        assert isinstance(body, dict)
        completion = self.complete(body)
        self.responses.append(completion)
        return _json(200, completion)

    def content_for(self, body: dict[str, Any]) -> str:
        messages: list[dict[str, Any]] = body["messages"]
        text = transcript_text(messages)
        response_format = body.get("response_format") or {"type": "text"}
        if response_format["type"] == "json_schema":
            schema = response_format["json_schema"].get("schema", {})
            if self.structured is not None:
                value = self.structured(body)
                if not json_schema_fill.problems(value, schema):
                    return orjson.dumps(value).decode()
            return orjson.dumps(json_schema_fill.fill(schema, text)).decode()
        if self.reply is not None:
            return self.reply(body)
        if response_format["type"] == "json_object":
            return orjson.dumps({"summary": json_schema_fill.summary_of(text)}).decode()
        return json_schema_fill.summary_of(text) or "Okay."

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        content = self.content_for(body)
        prompt_tokens = max(1, len(str(body["messages"])) // 4)
        completion_tokens = max(1, len(content) // 4)
        return {
            "id": "chatcmpl-" + secrets.token_urlsafe(21).replace("-", "x").replace("_", "y"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": content,
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": "fp_emulator",
        }


def _invalid_key(key: str) -> dict[str, Any]:
    if not key:
        message = (
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
        return error_body(message, "invalid_request_error")
    masked = f"{key[:4]}{'*' * max(0, len(key) - 8)}{key[-4:]}" if len(key) > 8 else "****"
    message = (
        f"Incorrect API key provided: {masked}. You can find your API key at "
        "https://platform.openai.com/account/api-keys."
    )
    return error_body(message, "invalid_request_error", None, "invalid_api_key")


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")
