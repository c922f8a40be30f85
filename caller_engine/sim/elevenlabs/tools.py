"""The workspace's tools as the emulated REST API keeps them, and their validation.

Requests are validated against ElevenLabs' published `ToolRequestModel` (their SDK's types)
when it is installed (a development dependency); unknown keys are refused, and each literal
parameter must take its value from exactly one source (description, dynamic variable,
constant, system, or omitted), as the API requires.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel, ValidationError

LITERAL_SOURCES = ("description", "dynamic_variable", "is_system_provided", "constant_value")
CLIENT_KEYS = frozenset(
    {
        "type",
        "name",
        "description",
        "response_timeout_secs",
        "disable_interruptions",
        "interruption_mode",
        "force_pre_tool_speech",
        "pre_tool_speech",
        "assignments",
        "tool_call_sound",
        "tool_call_sound_behavior",
        "tool_error_handling_mode",
        "parameters",
        "expects_response",
        "dynamic_variables",
        "execution_mode",
    }
)
PROPERTY_KEYS = {
    "object": frozenset({"type", "description", "properties", "required", "property_kind"}),
    "array": frozenset({"type", "description", "items", "property_kind"}),
    "literal": frozenset({"type", "description", "enum", *LITERAL_SOURCES, "is_omitted"}),
}


@cache
def request_model() -> type[BaseModel] | None:
    """ElevenLabs' published request type, or None without their SDK (a development
    dependency): then the rules below check alone."""
    try:
        from elevenlabs.types.tool_request_model import ToolRequestModel
    except ImportError:  # pragma: no cover - validation by the rules below only
        return None
    return ToolRequestModel


def _check_property(path: str, prop: Any, problems: list[str]) -> None:
    if not isinstance(prop, dict):
        problems.append(f"{path}: must be an object")
        return
    kind = prop.get("type")
    group = kind if kind in ("object", "array") else "literal"
    extra = set(prop) - PROPERTY_KEYS[group]
    if extra:
        problems.append(f"{path}: unknown field(s) {', '.join(sorted(extra))}")
    if group == "object":
        for name, child in (prop.get("properties") or {}).items():
            _check_property(f"{path}.properties.{name}", child, problems)
        missing = set(prop.get("required") or []) - set(prop.get("properties") or {})
        if missing:
            problems.append(f"{path}: required names unknown properties {sorted(missing)}")
        return
    if group == "array":
        _check_property(f"{path}.items", prop.get("items"), problems)
        return
    if kind not in ("string", "number", "integer", "boolean"):
        problems.append(f"{path}: unsupported type {kind!r}")
    sources = [s for s in (*LITERAL_SOURCES, "is_omitted") if prop.get(s) not in (None, False)]
    if len(sources) != 1:
        problems.append(
            f"{path}: exactly one of description, dynamic_variable, is_system_provided, "
            f"constant_value, is_omitted must be set (got {sources or 'none'})"
        )


def check_tool_request(body: Any) -> list[str]:
    """Problems with a create/update tool request (empty when it is valid)."""
    if not isinstance(body, dict):
        return ["body must be a JSON object"]
    model = request_model()
    if model is not None:
        try:
            model.model_validate(body)
        except ValidationError as exc:
            return [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
    problems: list[str] = []
    extra = set(body) - {"tool_config", "response_mocks"}
    if extra:
        problems.append(f"unknown field(s) {', '.join(sorted(extra))}")
    config = body.get("tool_config")
    if not isinstance(config, dict):
        return [*problems, "tool_config: must be an object"]
    if config.get("type") != "client":
        return problems  # only client tools are checked in depth here
    extra = set(config) - CLIENT_KEYS
    if extra:
        problems.append(f"tool_config: unknown field(s) {', '.join(sorted(extra))}")
    timeout = config.get("response_timeout_secs")
    if timeout is not None and not (1 <= timeout <= 120 or timeout == -1):
        problems.append("tool_config.response_timeout_secs: must be 1..120 (or -1)")
    if config.get("parameters") is not None:
        _check_property("tool_config.parameters", config["parameters"], problems)
    return problems
