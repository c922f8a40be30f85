"""Check client events against the GA types in `openai.types.realtime`.

The SDK's models accept extra keys, but the live server rejects any parameter it does not
know ("Unknown parameter: 'session.input_audio_format'."), so unknown keys are found by
walking the validated model. Beta-shape leftovers (flat `input_audio_format`, `modalities`,
top-level `voice`/`turn_detection`, `g711_ulaw`, a `session` without `type`) are named as
such in the violation text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from openai.types.realtime import RealtimeClientEvent
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from caller_engine.sim.openai.realtime.protocol import Rejection

CLIENT_EVENT: TypeAdapter[Any] = TypeAdapter(
    Annotated[RealtimeClientEvent, Field(discriminator="type")]
)

BETA_KEYS = frozenset(
    {
        "input_audio_format",
        "output_audio_format",
        "input_audio_transcription",
        "input_audio_noise_reduction",
        "modalities",
        "voice",
        "turn_detection",
        "temperature",
        "max_response_output_tokens",
    }
)
BETA_FORMATS = frozenset({"g711_ulaw", "g711_alaw", "pcm16"})
_TYPE_TOKENS = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "nullable"})


@dataclass
class CheckResult:
    rejection: Rejection | None = None
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rejection is None


def check_client_event(event: Any) -> CheckResult:
    """Validate one parsed client event; name every problem found."""
    if not isinstance(event, dict):
        rejection = Rejection("invalid_type", "Invalid event: expected a JSON object.")
        return CheckResult(rejection, [f"<non-object>: {rejection.message}"])
    if _plain_append(event):
        return CheckResult()
    event_type = event.get("type") if isinstance(event.get("type"), str) else "<no type>"
    result = CheckResult()
    for path, value in _beta_format_values(event):
        result.violations.append(
            f"{event_type}: beta audio format name '{value}' at '{path}' "
            "(GA formats are objects such as {'type': 'audio/pcmu'})"
        )
    session = event.get("session")
    if event_type == "session.update" and isinstance(session, dict) and "type" not in session:
        result.violations.append(
            "session.update: 'session' has no 'type' (beta shape; GA needs 'realtime')"
        )
    try:
        model = CLIENT_EVENT.validate_python(event)
    except ValidationError as exc:
        result.rejection = _rejection_from(exc)
        result.violations.append(f"{event_type}: {result.rejection.message}")
        return result
    unknown = unknown_parameters(model)
    for path in unknown:
        leftover = " (beta-shape leftover)" if path.rsplit(".", 1)[-1] in BETA_KEYS else ""
        result.violations.append(f"{event_type}: unknown parameter '{path}'{leftover}")
    if unknown:
        result.rejection = Rejection(
            "unknown_parameter", f"Unknown parameter: '{unknown[0]}'.", unknown[0]
        )
    return result


def _plain_append(event: dict[str, Any]) -> bool:
    """The hot path: a well-formed `input_audio_buffer.append` needs no model validation."""
    return (
        event.get("type") == "input_audio_buffer.append"
        and isinstance(event.get("audio"), str)
        and event.keys() <= {"type", "audio", "event_id"}
        and isinstance(event.get("event_id", ""), str)
    )


def unknown_parameters(value: Any, path: str = "") -> list[str]:
    """Dotted paths of keys the GA models did not declare."""
    found: list[str] = []
    if isinstance(value, BaseModel):
        found.extend(_join(path, key) for key in (value.model_extra or {}))
        for name in type(value).model_fields:
            found.extend(unknown_parameters(getattr(value, name), _join(path, name)))
    elif isinstance(value, list):
        for index, entry in enumerate(value):
            found.extend(unknown_parameters(entry, f"{path}[{index}]"))
    elif isinstance(value, dict):
        for key, entry in value.items():
            found.extend(unknown_parameters(entry, _join(path, str(key))))
    return found


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _beta_format_values(value: Any, path: str = "") -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(path, value)] if value in BETA_FORMATS else []
    found: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for key, entry in value.items():
            found.extend(_beta_format_values(entry, _join(path, str(key))))
    elif isinstance(value, list):
        for index, entry in enumerate(value):
            found.extend(_beta_format_values(entry, f"{path}[{index}]"))
    return found


def _param(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the server names parameters: 'session.audio.input'."""
    path = ""
    for index, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
        elif index == 0 and "." in part:
            continue  # the discriminator tag (the event type)
        elif part[:1].isupper() or "[" in part or part in _TYPE_TOKENS:
            continue  # a union member's name, not a field
        else:
            path = _join(path, part)
    return path


def _rejection_from(exc: ValidationError) -> Rejection:
    errors = exc.errors()
    best = max(errors, key=lambda error: len(_param(error["loc"])))
    param = _param(best["loc"])
    kind = best["type"]
    context = best.get("ctx") or {}
    if kind == "union_tag_invalid":
        return Rejection(
            "invalid_value",
            f"Invalid value: '{context.get('tag')}'. Supported values are: "
            f"{context.get('expected_tags')}.",
            _join(param, "type"),
        )
    if kind in ("missing", "union_tag_not_found"):
        name = _join(param, "type") if kind == "union_tag_not_found" else param
        return Rejection(
            "missing_required_parameter", f"Missing required parameter: '{name}'.", name
        )
    if kind == "literal_error":
        return Rejection(
            "invalid_value",
            f"Invalid value: '{best.get('input')}'. Supported values are: "
            f"{context.get('expected')}.",
            param,
        )
    return Rejection("invalid_type", f"Invalid type for '{param}': {best['msg']}.", param)
