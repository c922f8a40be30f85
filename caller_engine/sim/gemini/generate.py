"""Emulator of the Gemini API's `models/{model}:generateContent` (the post-call summary).

The request is checked the way the service checks it: the `x-goog-api-key` header, known
top-level fields only, `contents`/`systemInstruction` as `Content` and `generationConfig` as
`GenerationConfig` of the `google-genai` package (when it is installed), a JSON response
schema only with `responseMimeType: application/json`, not both schema forms. A structured
request is answered with a value that fills its schema from the prompt's text (or what
`structured` returns), as the single text part of one candidate. Errors have the service's
shape: `{"error": {"code", "message", "status"}}`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from caller_engine.sim.gemini.validation import genai_types
from caller_engine.sim.json_schema_fill import fill

PATH = "/v1beta/models/{target}"
KNOWN_FIELDS = frozenset(
    {
        "contents",
        "systemInstruction",
        "generationConfig",
        "tools",
        "toolConfig",
        "safetySettings",
        "cachedContent",
    }
)
BAD_KEY = "API key not valid. Please pass a valid API key."

Structured = Callable[[dict[str, Any]], Any]


class GenerateRefusal(Exception):
    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message


def _invalid(message: str) -> GenerateRefusal:
    return GenerateRefusal(400, "INVALID_ARGUMENT", message)


def _unknown(name: str) -> GenerateRefusal:
    return _invalid(f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.')


def _validate(type_name: str, value: Any, where: str) -> None:
    types = genai_types()
    if types is None:
        return
    try:
        getattr(types, type_name).model_validate(value)
    except Exception as exc:
        errors: list[dict[str, Any]] = getattr(exc, "errors", list)()
        for error in errors:
            if error.get("type") == "extra_forbidden":
                raise _unknown(str(error["loc"][-1])) from None
        raise _invalid(f"Invalid value at '{where}'.") from None


def check_request(body: Any) -> None:
    """Raise GenerateRefusal for what the service refuses in a generateContent body."""
    if not isinstance(body, dict):
        raise _invalid("Invalid JSON payload received.")
    for name in body:
        if name not in KNOWN_FIELDS:
            raise _unknown(name)
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _invalid("* GenerateContentRequest.contents: contents is not specified")
    for content in contents:
        _validate("Content", content, "contents")
    if "systemInstruction" in body:
        _validate("Content", body["systemInstruction"], "system_instruction")
    config = body.get("generationConfig") or {}
    _validate("GenerationConfig", config, "generation_config")
    if "responseSchema" in config and "responseJsonSchema" in config:
        raise _invalid("responseSchema and responseJsonSchema cannot both be set.")
    has_schema = "responseJsonSchema" in config or "responseSchema" in config
    if has_schema and config.get("responseMimeType") != "application/json":
        raise _invalid("* GenerationConfig.response_mime_type: must be application/json")


def _prompt_text(body: dict[str, Any]) -> str:
    return "\n".join(
        str(part.get("text", ""))
        for content in body.get("contents") or ()
        for part in content.get("parts") or ()
    )


class GenerateContentEmulator:
    def __init__(self, api_key: str, *, structured: Structured | None = None) -> None:
        self.api_key = api_key
        self.structured = structured
        self.requests: list[dict[str, Any]] = []
        self.models: list[str] = []
        self.refusals: list[str] = []

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(PATH, self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        model, _, method = request.match_info["target"].partition(":")
        try:
            if method != "generateContent":
                raise GenerateRefusal(404, "NOT_FOUND", f"Method {method} is not found.")
            if request.headers.get("x-goog-api-key") != self.api_key:
                raise _invalid(BAD_KEY)
            if not model.startswith("gemini-"):
                raise GenerateRefusal(
                    404, "NOT_FOUND", f"models/{model} is not found for API version v1beta."
                )
            try:
                body = orjson.loads(await request.read())
            except orjson.JSONDecodeError:
                raise _invalid("Invalid JSON payload received.") from None
            check_request(body)
        except GenerateRefusal as refusal:
            self.refusals.append(refusal.message)
            error = {"code": refusal.code, "message": refusal.message, "status": refusal.status}
            return web.json_response({"error": error}, status=refusal.code, dumps=_dumps)
        self.requests.append(body)
        self.models.append(model)
        return web.json_response(self._answer(model, body), dumps=_dumps)

    def _answer(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        config = body.get("generationConfig") or {}
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        if self.structured is not None:
            text = orjson.dumps(self.structured(body)).decode()
        elif schema is not None:
            text = orjson.dumps(fill(schema, _prompt_text(body))).decode()
        else:
            text = "Okay."
        return {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": text}]},
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1},
            "modelVersion": model,
        }


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
