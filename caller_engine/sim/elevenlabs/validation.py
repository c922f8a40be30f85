"""Check client messages the way the service does.

`conversation_initiation_client_data` is validated against ElevenLabs' own published type
(`elevenlabs.types.ConversationInitiationClientDataRequestInput`, from their SDK) when it is
installed (a development dependency; without it the rules below check alone); its models
accept unknown keys, so those are found by walking the validated model. The other client
messages follow the AsyncAPI contract's payloads (required fields and types). A message the
service refuses (not JSON, no known `type`, a client `ping`, a missing or mistyped required
field) closes the conversation with 1008 "Invalid message received".
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel, ValidationError

# type → {field: accepted types}; every listed field is required.
REQUIRED: dict[str, dict[str, tuple[type, ...]]] = {
    "pong": {"event_id": (int,)},
    "client_tool_result": {
        "tool_call_id": (str,),
        "result": (str,),
        "is_error": (bool,),
    },
    "contextual_update": {"text": (str,)},
    "user_message": {},
    "user_activity": {},
    "feedback": {"event_id": (int,), "score": (str,)},
    "mcp_tool_approval_result": {"tool_call_id": (str,), "is_approved": (bool,)},
    "multimodal_message": {},
}
KNOWN_KEYS: dict[str, frozenset[str]] = {
    "pong": frozenset({"type", "event_id"}),
    "client_tool_result": frozenset({"type", "tool_call_id", "result", "is_error"}),
    "contextual_update": frozenset({"type", "text", "context_id"}),
    "user_message": frozenset({"type", "text", "rich_content_id"}),
    "user_activity": frozenset({"type"}),
    "feedback": frozenset({"type", "event_id", "score"}),
    "mcp_tool_approval_result": frozenset({"type", "tool_call_id", "is_approved"}),
    "multimodal_message": frozenset({"type", "text", "file"}),
}
INIT = "conversation_initiation_client_data"


@dataclass(frozen=True)
class Problem:
    message: str
    fatal: bool  # the service closes with 1008
    error_type: str = "invalid_message"


@cache
def _init_model() -> type[BaseModel] | None:
    """ElevenLabs' published type, or None without their SDK (a development dependency)."""
    try:
        from elevenlabs.types.conversation_initiation_client_data_request_input import (
            ConversationInitiationClientDataRequestInput,
        )
    except ImportError:  # pragma: no cover - validation by the rules below only
        return None
    return ConversationInitiationClientDataRequestInput


def load_published_types() -> None:
    from caller_engine.sim.elevenlabs.tools import request_model

    _init_model()
    request_model()


def _unknown_keys(model: BaseModel, path: str = "") -> list[str]:
    found = [f"{path}{k}" for k in (model.model_extra or {})]
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            found.extend(_unknown_keys(value, f"{path}{name}."))
    return found


def check_initiation(msg: dict[str, Any]) -> Problem | None:
    body = {k: v for k, v in msg.items() if k != "type"}
    published = _init_model()
    if published is not None:
        try:
            model = published.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            return Problem(f"{INIT}: {where}: {first['msg']}", True, "value_error")
        unknown = _unknown_keys(model)
        if unknown:
            return Problem(f"{INIT}: unknown field(s) {', '.join(unknown)}", True, "value_error")
    variables = body.get("dynamic_variables") or {}
    if not isinstance(variables, dict):
        return Problem(f"{INIT}: dynamic_variables: must be an object", True, "value_error")
    for name, value in variables.items():
        if not isinstance(value, str | int | float | bool):
            return Problem(f"dynamic variable '{name}' must be a string, number or boolean", True)
        if name.startswith("system__"):
            return Problem(f"dynamic variable '{name}' uses the reserved system__ prefix", True)
    return None


def check_message(msg: Any) -> Problem | None:
    """A parsed client message other than audio and the initiation message."""
    if not isinstance(msg, dict):
        return Problem("Invalid message received (not a JSON object)", True)
    kind = msg.get("type")
    if kind == "ping":
        return Problem("Invalid message received (clients do not send ping)", True)
    if kind == INIT:
        return check_initiation(msg)
    fields = REQUIRED.get(kind) if isinstance(kind, str) else None
    if fields is None or not isinstance(kind, str):
        return Problem(f"Invalid message received (unknown type {kind!r})", True)
    for name, types in fields.items():
        value = msg.get(name)
        if (
            value is None
            or not isinstance(value, types)
            or (bool in types) != (type(value) is bool)
        ):
            return Problem(
                f"{kind}: '{name}' is missing or of the wrong type", True, "missing_fields"
            )
    extra = set(msg) - KNOWN_KEYS[kind]
    if extra:
        return Problem(f"{kind}: unknown field(s) {', '.join(sorted(extra))}", False)
    return None


def check_audio(msg: dict[str, Any]) -> tuple[bytes | None, Problem | None]:
    chunk = msg.get("user_audio_chunk")
    if not isinstance(chunk, str):
        return None, Problem("user_audio_chunk must be a base64 string", True, "missing_fields")
    try:
        return binascii.a2b_base64(chunk, strict_mode=True), None
    except binascii.Error:
        return None, Problem("user_audio_chunk is not valid base64", True, "value_error")
