"""The shape of each Nova Sonic input event, checked strictly (unknown fields refused).

Each check returns nothing or raises `Invalid` with the text the emulator sends back in a
`validationException`. Order and cross-event rules live in the session.
"""

from __future__ import annotations

import json
from typing import Any

RATES = (8000, 16000, 24000)
VOICES = frozenset(
    [
        "matthew",
        "tiffany",
        "amy",
        "olivia",
        "lupe",
        "carlos",
        "ambre",
        "florian",
        "lennart",
        "beatrice",
        "lorenzo",
        "tina",
        "carolina",
        "leo",
        "kiara",
        "arjun",
    ]
)
ROLES = ("SYSTEM", "USER", "ASSISTANT", "TOOL", "SYSTEM_SPEECH")
SENSITIVITIES = ("HIGH", "MEDIUM", "LOW")
MAX_EVENT_BYTES = 1_000_000


class Invalid(ValueError):
    pass


def _object(value: Any, where: str, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(f"{where} must be an object")
    unknown = set(value) - allowed
    if unknown:
        raise Invalid(f"{where} has unknown field(s): {', '.join(sorted(unknown))}")
    missing = required - set(value)
    if missing:
        raise Invalid(f"{where} is missing required field(s): {', '.join(sorted(missing))}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise Invalid(f"{where} must be a non-empty string")
    return value


def _number(value: Any, where: str, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise Invalid(f"{where} must be a number in [{low}, {high}]")


def _lpcm(value: Any, where: str, *, output: bool) -> None:
    allowed = {"mediaType", "sampleRateHertz", "sampleSizeBits", "channelCount", "encoding"}
    allowed |= {"audioType", "voiceId"} if output else {"audioType"}
    config = _object(value, where, allowed, allowed - {"voiceId", "audioType"})
    if config["mediaType"] != "audio/lpcm":
        raise Invalid(f"{where}.mediaType must be audio/lpcm")
    if config["sampleRateHertz"] not in RATES:
        raise Invalid(f"{where}.sampleRateHertz must be one of 8000, 16000, 24000")
    if config["sampleSizeBits"] != 16 or config["channelCount"] != 1:
        raise Invalid(f"{where} must be 16-bit mono")
    if config["encoding"] != "base64":
        raise Invalid(f"{where}.encoding must be base64")
    if config.get("audioType", "SPEECH") != "SPEECH":
        raise Invalid(f"{where}.audioType must be SPEECH")
    if output and config.get("voiceId", "matthew") not in VOICES:
        raise Invalid(f"{where}.voiceId {config.get('voiceId')!r} is not a supported voice")


def _text_config(value: Any, where: str) -> None:
    config = _object(value, where, {"mediaType"}, {"mediaType"})
    if config["mediaType"] != "text/plain":
        raise Invalid(f"{where}.mediaType must be text/plain")


def session_start(body: dict[str, Any], *, nested_turn_detection: bool) -> None:
    allowed = {"inferenceConfiguration", "turnDetectionConfiguration"}
    if not nested_turn_detection:
        allowed.add("endpointingSensitivity")
    elif "endpointingSensitivity" in body:
        raise Invalid("Invalid input request")
    _object(body, "sessionStart", allowed, {"inferenceConfiguration"})
    inference = _object(
        body["inferenceConfiguration"],
        "sessionStart.inferenceConfiguration",
        {"maxTokens", "topP", "temperature"},
        set(),
    )
    if "maxTokens" in inference:
        tokens = inference["maxTokens"]
        if isinstance(tokens, bool) or not isinstance(tokens, int) or not 1 <= tokens <= 10000:
            raise Invalid("inferenceConfiguration.maxTokens must be an integer in [1, 10000]")
    for name in ("topP", "temperature"):
        if name in inference:
            _number(inference[name], f"inferenceConfiguration.{name}", 0, 1)
    if "turnDetectionConfiguration" in body:
        turn = _object(
            body["turnDetectionConfiguration"],
            "sessionStart.turnDetectionConfiguration",
            {"endpointingSensitivity"},
            {"endpointingSensitivity"},
        )
        if turn["endpointingSensitivity"] not in SENSITIVITIES:
            raise Invalid("endpointingSensitivity must be HIGH, MEDIUM or LOW")


def prompt_start(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The prompt's tools by name (their parsed input schemas)."""
    _object(
        body,
        "promptStart",
        {
            "promptName",
            "textOutputConfiguration",
            "audioOutputConfiguration",
            "toolUseOutputConfiguration",
            "toolConfiguration",
        },
        {"promptName", "textOutputConfiguration", "audioOutputConfiguration"},
    )
    _string(body["promptName"], "promptStart.promptName")
    _text_config(body["textOutputConfiguration"], "promptStart.textOutputConfiguration")
    _lpcm(body["audioOutputConfiguration"], "promptStart.audioOutputConfiguration", output=True)
    if "toolUseOutputConfiguration" in body:
        config = _object(
            body["toolUseOutputConfiguration"],
            "promptStart.toolUseOutputConfiguration",
            {"mediaType"},
            {"mediaType"},
        )
        if config["mediaType"] != "application/json":
            raise Invalid("toolUseOutputConfiguration.mediaType must be application/json")
    tools: dict[str, dict[str, Any]] = {}
    if "toolConfiguration" in body:
        config = _object(
            body["toolConfiguration"], "promptStart.toolConfiguration", {"tools"}, {"tools"}
        )
        if not isinstance(config["tools"], list):
            raise Invalid("toolConfiguration.tools must be a list")
        for index, tool in enumerate(config["tools"]):
            where = f"toolConfiguration.tools[{index}]"
            spec = _object(
                _object(tool, where, {"toolSpec"}, {"toolSpec"})["toolSpec"],
                f"{where}.toolSpec",
                {"name", "description", "inputSchema"},
                {"name", "description", "inputSchema"},
            )
            name = _string(spec["name"], f"{where}.toolSpec.name")
            schema = _object(spec["inputSchema"], f"{where}.inputSchema", {"json"}, {"json"})
            if not isinstance(schema["json"], str):
                raise Invalid(f"{where}.inputSchema.json must be a JSON string")
            try:
                parsed = json.loads(schema["json"])
            except ValueError as exc:
                raise Invalid(f"{where}.inputSchema.json is not valid JSON") from exc
            if not isinstance(parsed, dict) or parsed.get("type") != "object":
                raise Invalid(f"{where}.inputSchema.json must describe an object")
            if name in tools:
                raise Invalid(f"duplicate tool name {name!r}")
            tools[name] = parsed
    return tools


def content_start(body: dict[str, Any]) -> None:
    _object(
        body,
        "contentStart",
        {
            "promptName",
            "contentName",
            "type",
            "interactive",
            "role",
            "textInputConfiguration",
            "audioInputConfiguration",
            "toolResultInputConfiguration",
        },
        {"promptName", "contentName", "type", "role"},
    )
    _string(body["contentName"], "contentStart.contentName")
    kind, role = body["type"], body["role"]
    if role not in ROLES:
        raise Invalid(f"contentStart.role {role!r} is not one of {', '.join(ROLES)}")
    if not isinstance(body.get("interactive", False), bool):
        raise Invalid("contentStart.interactive must be a boolean")
    configs = {
        key for key in ("textInputConfiguration", "audioInputConfiguration") if key in body
    } | ({"toolResultInputConfiguration"} if "toolResultInputConfiguration" in body else set())
    if kind == "TEXT":
        if configs != {"textInputConfiguration"}:
            raise Invalid("a TEXT content takes textInputConfiguration only")
        _text_config(body["textInputConfiguration"], "contentStart.textInputConfiguration")
    elif kind == "AUDIO":
        if configs != {"audioInputConfiguration"}:
            raise Invalid("an AUDIO content takes audioInputConfiguration only")
        if role != "USER" or body.get("interactive") is not True:
            raise Invalid("an AUDIO content must be interactive with role USER")
        _lpcm(body["audioInputConfiguration"], "contentStart.audioInputConfiguration", output=False)
    elif kind == "TOOL":
        if configs != {"toolResultInputConfiguration"} or role != "TOOL":
            raise Invalid("a TOOL content has role TOOL and toolResultInputConfiguration")
        config = _object(
            body["toolResultInputConfiguration"],
            "contentStart.toolResultInputConfiguration",
            {"toolUseId", "type", "textInputConfiguration"},
            {"toolUseId", "type", "textInputConfiguration"},
        )
        _string(config["toolUseId"], "toolResultInputConfiguration.toolUseId")
        if config["type"] != "TEXT":
            raise Invalid("toolResultInputConfiguration.type must be TEXT")
        _text_config(config["textInputConfiguration"], "toolResultInputConfiguration")
    else:
        raise Invalid(f"contentStart.type {kind!r} is not TEXT, AUDIO or TOOL")


def content_event(name: str, body: dict[str, Any]) -> None:
    """textInput, audioInput, toolResult and contentEnd."""
    if name == "contentEnd":
        _object(body, name, {"promptName", "contentName"}, {"promptName", "contentName"})
        return
    _object(body, name, {"promptName", "contentName", "content"}, {"promptName", "contentName"})
    if not isinstance(body.get("content"), str):
        raise Invalid(f"{name}.content must be a string")
