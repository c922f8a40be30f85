"""What the Gemini Live service refuses in a client message, with its close code and reason.

The message shape is checked against the `google-genai` package's pydantic types when it is
installed (a development dependency): an unknown or misplaced field gets the service's 1007
`Unknown name "<f>" at '<path>': Cannot find field.`. On top of the types, the rules the types
do not carry: one field per message, Live-unsupported generation fields, one modality, a
`response` that is an object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any


@cache
def _genai_types() -> Any:
    """google-genai's types module, or None; imported on first use (it is large)."""
    try:
        from google.genai import types
    except ImportError:  # pragma: no cover - validation by the rules below only
        return None
    return types


genai_types = _genai_types


INVALID_ARGUMENT = "Request contains an invalid argument."
CLIENT_KEYS = ("setup", "clientContent", "realtimeInput", "toolResponse")
UNSUPPORTED_GENERATION = (
    "responseLogprobs",
    "responseMimeType",
    "logprobs",
    "responseSchema",
    "responseJsonSchema",
    "stopSequence",
    "routingConfig",
    "audioTimestamp",
)
# Wire fields of `setup` that the SDK's LiveClientSetup type does not model itself (its
# converters move them from the connect config).
SETUP_EXTRA = {"realtimeInputConfig": "RealtimeInputConfig"}


@dataclass(frozen=True, slots=True)
class Refusal:
    code: int
    reason: str


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def unknown_field(path: list[str], name: str) -> Refusal:
    where = ".".join(_snake(p) for p in path)
    return Refusal(
        1007,
        f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': Cannot find field.",
    )


def _validate_type(type_name: str, value: Any, path: list[str]) -> Refusal | None:
    genai_types = _genai_types()
    if genai_types is None:
        return None
    model = getattr(genai_types, type_name)
    try:
        model.model_validate(value)
    except Exception as exc:
        errors: list[dict[str, Any]] = getattr(exc, "errors", list)()
        for error in errors:
            if error.get("type") == "extra_forbidden":
                loc = [str(p) for p in error["loc"] if not isinstance(p, int)]
                return unknown_field(path + loc[:-1], loc[-1])
        return Refusal(1007, INVALID_ARGUMENT)
    return None


# Audio chunks repeat one shape fifty times a second per call: a shape the types accepted
# once (the same fields, the same values but the payload's) is not validated again, so the
# emulator does not spend more on pydantic than the bridge spends on the whole call.
_ACCEPTED_INPUTS: set[tuple[Any, ...]] = set()
MAX_SHAPES = 256
_SCALARS = (str, bool, int, float, type(None))


def _input_shape(body: dict[str, Any]) -> tuple[Any, ...] | None:
    """`realtimeInput`'s field, its fields' names and their values (the `data` payload only
    by type), or None when it holds anything nested."""
    ((key, value),) = body.items()
    if not isinstance(value, dict):
        return None
    fields: list[tuple[str, type, Any]] = []
    for name, item in value.items():
        if not isinstance(item, _SCALARS):
            return None
        fields.append((name, type(item), None if name == "data" else item))
    return (key, tuple(fields))


def check_message(message: Any, *, setup_done: bool) -> Refusal | None:
    if not isinstance(message, dict) or len(message) != 1:
        return Refusal(1007, INVALID_ARGUMENT)
    ((key, body),) = message.items()
    if key not in CLIENT_KEYS:
        return unknown_field([], key)
    if not isinstance(body, dict):
        return Refusal(1007, INVALID_ARGUMENT)
    if key == "setup":
        return Refusal(1007, INVALID_ARGUMENT) if setup_done else check_setup(body)
    if not setup_done:
        return Refusal(1007, INVALID_ARGUMENT)
    if key == "realtimeInput":
        if len(body) != 1:
            return Refusal(1007, INVALID_ARGUMENT)
        shape = _input_shape(body)
        if shape is not None and shape in _ACCEPTED_INPUTS:
            return None
        refusal = _validate_type("LiveClientRealtimeInput", body, ["realtime_input"])
        if refusal is None and shape is not None and len(_ACCEPTED_INPUTS) < MAX_SHAPES:
            _ACCEPTED_INPUTS.add(shape)
        return refusal
    if key == "toolResponse":
        for response in body.get("functionResponses") or ():
            if not isinstance(response.get("response"), dict) or not response.get("id"):
                return Refusal(1007, INVALID_ARGUMENT)
        return _validate_type("LiveClientToolResponse", body, ["tool_response"])
    return _validate_type("LiveClientContent", body, ["client_content"])


def check_setup(setup: dict[str, Any]) -> Refusal | None:
    rest = dict(setup)
    for name, type_name in SETUP_EXTRA.items():
        if name in rest:
            refusal = _validate_type(type_name, rest.pop(name), ["setup", name])
            if refusal is not None:
                return refusal
    generation = rest.get("generationConfig") or {}
    for name in UNSUPPORTED_GENERATION:
        if name in generation:
            return Refusal(1007, INVALID_ARGUMENT)
    if len(generation.get("responseModalities") or ["AUDIO"]) != 1:
        return Refusal(1007, INVALID_ARGUMENT)
    if "safetySettings" in rest or "transparent" in (rest.get("sessionResumption") or {}):
        return Refusal(1007, INVALID_ARGUMENT)
    for tool in rest.get("tools") or ():
        for decl in tool.get("functionDeclarations") or ():
            if "parameters" in decl and "parametersJsonSchema" in decl:
                return Refusal(1007, INVALID_ARGUMENT)
            params = decl.get("parameters") or {}
            for bad in ("additionalProperties", "$ref", "$defs"):
                if bad in params:
                    return unknown_field(
                        ["setup", "tools", "functionDeclarations", "parameters"], bad
                    )
    return _validate_type("LiveClientSetup", rest, ["setup"])
