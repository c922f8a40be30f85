"""Deterministic values for a JSON schema, taken from cues in a transcript.

Used by the Chat Completions emulator to answer structured-output requests the way a
model would: always valid against the schema, and plausibly related to the conversation.

- strings: a `<field words>: value` / `<field words> is value` cue, an e-mail or phone
  number for such fields, the first sentences for summary-like fields, else "";
- enums: the first allowed value mentioned in the text, else the first allowed value;
- booleans: whether the field's words occur in the text; numbers: a number after the
  field's words, else the minimum or 0;
- nullable fields: null, except date-like fields when the text contains an ISO date;
- arrays: enum items mentioned in the text, else `minItems` filled items.

`problems(value, schema)` checks a value against the same subset of JSON Schema, and
`strict_problems(schema)` names what strict structured outputs would refuse.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2})(?:(?:T|\s+at\s+|\s+)(\d{1,2}:\d{2})(?::\d{2})?)?")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
PHONE = re.compile(r"\+?\d[\d\s().-]{6,}\d")
DATE_WORDS = ("date", "time", "when", "deadline", "callback", "appointment", "scheduled", "_at")
SUMMARY_WORDS = ("summary", "description", "notes", "note", "reason", "details")


def fill(schema: dict[str, Any], text: str, *, root: dict[str, Any] | None = None) -> Any:
    return _fill(schema, text, "", root if root is not None else schema)


def _words(key: str) -> str:
    return re.sub(r"[_\-]+", " ", re.sub(r"([a-z])([A-Z])", r"\1 \2", key)).strip().lower()


def resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """Follow `$ref`s of the form `#/$defs/Name` (or any `#/a/b` pointer)."""
    seen = 0
    while "$ref" in schema and seen < 32:
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        seen += 1
    return schema


def split_nullable(schema: dict[str, Any], root: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(the non-null schema, whether null is allowed)."""
    schema = resolve(schema, root)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            branches = [resolve(branch, root) for branch in schema[key]]
            concrete = [branch for branch in branches if branch.get("type") != "null"]
            nullable = len(concrete) < len(branches)
            base = concrete[0] if concrete else {"type": "null"}
            inner, inner_nullable = split_nullable(base, root)
            return inner, nullable or inner_nullable
    kind = schema.get("type")
    if isinstance(kind, list):
        others = [entry for entry in kind if entry != "null"]
        base = {**schema, "type": others[0] if others else "null"}
        return base, "null" in kind
    if "enum" in schema and None in schema["enum"]:
        return {**schema, "enum": [v for v in schema["enum"] if v is not None]}, True
    return schema, kind == "null"


def _is_date_like(key: str, schema: dict[str, Any]) -> bool:
    return schema.get("format") in ("date", "date-time") or any(
        word in key.lower() for word in DATE_WORDS
    )


def _date_value(schema: dict[str, Any], text: str) -> str | None:
    match = DATE.search(text)
    if match is None:
        return None
    day, clock = match.group(1), match.group(2)
    clock = clock.zfill(5) if clock else None
    if schema.get("format") == "date":
        return day
    if schema.get("format") == "date-time":
        return f"{day}T{clock or '09:00'}:00"
    return f"{day} {clock}" if clock else day


def _fill(schema: dict[str, Any], text: str, key: str, root: dict[str, Any]) -> Any:
    base, nullable = split_nullable(schema, root)
    if nullable:
        date = _date_value(base, text) if _is_date_like(key, base) else None
        return date if base.get("type") == "string" and date is not None else None
    if "const" in base:
        return base["const"]
    if "enum" in base:
        return pick_enum(base["enum"], text)
    kind = base.get("type", "object" if "properties" in base else "string")
    if kind == "object":
        properties: dict[str, Any] = base.get("properties", {})
        return {name: _fill(sub, text, name, root) for name, sub in properties.items()}
    if kind == "array":
        return _fill_array(base, text, key, root)
    if kind == "boolean":
        words = _words(key)
        return bool(words) and words in text.lower()
    if kind in ("integer", "number"):
        return _fill_number(base, text, key, kind)
    if kind == "null":
        return None
    return _fill_string(base, text, key)


def pick_enum(values: list[Any], text: str) -> Any:
    lowered = text.lower()
    for value in values:
        if isinstance(value, str) and _words(value) and _words(value) in lowered:
            return value
    return values[0] if values else None


def _fill_array(schema: dict[str, Any], text: str, key: str, root: dict[str, Any]) -> list[Any]:
    items = resolve(schema.get("items") or {}, root)
    minimum = int(schema.get("minItems", 0))
    if "enum" in items:
        lowered = text.lower()
        found = [v for v in items["enum"] if isinstance(v, str) and _words(v) in lowered]
        found += [v for v in items["enum"] if v not in found][: max(0, minimum - len(found))]
        maximum = schema.get("maxItems")
        return found[: int(maximum)] if maximum is not None else found
    return [_fill(items, text, key, root) for _ in range(minimum)]


def _cue(key: str, text: str) -> str | None:
    words = _words(key)
    if not words:
        return None
    pattern = re.escape(words).replace(r"\ ", r"[\s_-]+")
    match = re.search(rf"\b{pattern}\b\s*(?::|=|\bis\b|\bwas\b)\s*([^.\n;]+)", text, re.IGNORECASE)
    return match.group(1).strip() if match else None


def _fill_number(schema: dict[str, Any], text: str, key: str, kind: str) -> int | float:
    cue = _cue(key, text)
    found = re.search(r"-?\d+(?:\.\d+)?", cue) if cue else None
    value: float = float(found.group(0)) if found else float(schema.get("minimum", 0))
    if "maximum" in schema:
        value = min(value, float(schema["maximum"]))
    if "minimum" in schema:
        value = max(value, float(schema["minimum"]))
    return int(value) if kind == "integer" else value


def summary_of(text: str, limit: int = 240) -> str:
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    summary = ""
    for sentence in sentences:
        if summary and len(summary) + len(sentence) + 1 > limit:
            break
        summary = f"{summary} {sentence}".strip()
    return summary[:limit]


def _fill_string(schema: dict[str, Any], text: str, key: str) -> str:
    lowered_key = key.lower()
    value: str | None = None
    if _is_date_like(key, schema):
        value = _date_value(schema, text)
        if value is None and schema.get("format") in ("date", "date-time"):
            now = datetime.now(UTC)
            value = now.date().isoformat() if schema["format"] == "date" else now.isoformat()
    if value is None and ("email" in lowered_key or schema.get("format") == "email"):
        match = EMAIL.search(text)
        value = match.group(0) if match else None
    if value is None and "phone" in lowered_key:
        match = PHONE.search(text)
        value = re.sub(r"[\s().-]", "", match.group(0)) if match else None
    if value is None:
        value = _cue(key, text)
    if value is None and any(word in lowered_key for word in SUMMARY_WORDS):
        value = summary_of(text)
    value = value or ""
    minimum, maximum = schema.get("minLength"), schema.get("maxLength")
    if minimum is not None and len(value) < int(minimum):
        value = value.ljust(int(minimum), ".")
    if maximum is not None:
        value = value[: int(maximum)]
    return value


# -- checking ------------------------------------------------------------------------------

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def problems(value: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> list[str]:
    """Where `value` breaks the schema (the subset used by structured outputs)."""
    return _check(value, schema, root if root is not None else schema, "$")


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "null":
        return value is None
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES.get(kind, (object,)))


def _check(value: Any, schema: dict[str, Any], root: dict[str, Any], at: str) -> list[str]:
    schema = resolve(schema, root)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            if any(not _check(value, branch, root, at) for branch in schema[key]):
                return []
            return [f"{at}: matches no branch of {key}"]
    found: list[str] = []
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    if kinds and not any(_type_ok(value, k) for k in kinds):
        return [f"{at}: expected {kind}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{at}: {value!r} not in {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        found.append(f"{at}: {value!r} != {schema['const']!r}")
    if isinstance(value, dict):
        properties: dict[str, Any] = schema.get("properties", {})
        found += [
            f"{at}: missing '{name}'" for name in schema.get("required", []) if name not in value
        ]
        if schema.get("additionalProperties") is False:
            found += [f"{at}: unexpected '{name}'" for name in value if name not in properties]
        for name, entry in value.items():
            if name in properties:
                found += _check(entry, properties[name], root, f"{at}.{name}")
    if isinstance(value, list):
        if len(value) < int(schema.get("minItems", 0)):
            found.append(f"{at}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > int(schema["maxItems"]):
            found.append(f"{at}: more than {schema['maxItems']} items")
        for index, entry in enumerate(value):
            found += _check(entry, schema.get("items") or {}, root, f"{at}[{index}]")
    if isinstance(value, str):
        if len(value) < int(schema.get("minLength", 0)):
            found.append(f"{at}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > int(schema["maxLength"]):
            found.append(f"{at}: longer than {schema['maxLength']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            found.append(f"{at}: below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            found.append(f"{at}: above {schema['maximum']}")
    return found


def strict_problems(schema: dict[str, Any]) -> list[str]:
    """What strict structured outputs refuse: the first problem per object, in the
    service's words ("In context=('properties', 'x'), ...")."""
    found: list[str] = []
    if schema.get("type") != "object":
        found.append("In context=(), schema must be a JSON Schema of 'type: \"object\"'.")
    _strict(schema, (), found)
    for name, definition in (schema.get("$defs") or {}).items():
        _strict(definition, ("$defs", name), found)
    return found


def _strict(schema: Any, context: tuple[str, ...], found: list[str]) -> None:
    if not isinstance(schema, dict):
        return
    where = f"In context={context!r}"
    kind = schema.get("type")
    is_object = kind == "object" or (isinstance(kind, list) and "object" in kind)
    if is_object or "properties" in schema:
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is not False:
            found.append(
                f"{where}, 'additionalProperties' is required to be supplied and to be false."
            )
        missing = [name for name in properties if name not in schema.get("required", [])]
        if missing:
            found.append(
                f"{where}, 'required' is required to be supplied and to be an array including "
                f"every key in properties. Missing '{missing[0]}'."
            )
        for name, sub in properties.items():
            _strict(sub, (*context, "properties", name), found)
    if isinstance(schema.get("items"), dict):
        _strict(schema["items"], (*context, "items"), found)
    for key in ("anyOf", "oneOf"):
        for index, branch in enumerate(schema.get(key, [])):
            _strict(branch, (*context, key, str(index)), found)
