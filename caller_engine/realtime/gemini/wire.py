"""Gemini Live client messages and close-code meanings (BidiGenerateContent, v1beta)."""

from __future__ import annotations

from typing import Any

from caller_engine.realtime.base import HistoryItem, SessionConfig
from caller_engine.realtime.gemini.profiles import ModelProfile

# Closes that refuse the session: invalid argument/key/location (1007), model not found or
# policy (1008). A new connection with the same setup would fail again.
REFUSED = frozenset({1007, 1008})
QUOTA_MARKERS = ("RESOURCE_EXHAUSTED", "quota", "Maximum concurrent sessions")


def model_path(model: str) -> str:
    return model if model.startswith("models/") else f"models/{model}"


def function_declarations(
    tools: list[dict[str, Any]], profile: ModelProfile
) -> list[dict[str, Any]]:
    """OpenAI-style function tools → Gemini function declarations (raw JSON Schema)."""
    out = []
    for tool in tools:
        decl: dict[str, Any] = {"name": tool["name"], "description": tool.get("description", "")}
        params = tool.get("parameters")
        if params:
            decl["parametersJsonSchema"] = params
        decl["behavior"] = profile.tool_behavior
        out.append(decl)
    return out


def setup_message(
    config: SessionConfig,
    model: str,
    profile: ModelProfile,
    *,
    handle: str | None,
    language: str | None = None,
) -> dict[str, Any]:
    speech: dict[str, Any] = {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": config.voice}}}
    if language:
        speech["languageCode"] = language
    generation: dict[str, Any] = {"responseModalities": ["AUDIO"], "speechConfig": speech}
    if profile.thinking is not None:
        generation["thinkingConfig"] = profile.thinking
    setup: dict[str, Any] = {
        "model": model_path(model),
        "generationConfig": generation,
        "systemInstruction": {"parts": [{"text": config.instructions}]},
        "realtimeInputConfig": {
            "automaticActivityDetection": {
                "silenceDurationMs": config.vad_silence_ms,
                "prefixPaddingMs": config.vad_prefix_ms,
            },
        },
        "inputAudioTranscription": {},
        "outputAudioTranscription": {},
        "sessionResumption": {"handle": handle} if handle else {},
        "contextWindowCompression": {"slidingWindow": {}},
    }
    if config.tools:
        setup["tools"] = [{"functionDeclarations": function_declarations(config.tools, profile)}]
    return {"setup": setup}


def history_turns(history: list[HistoryItem]) -> list[dict[str, Any]]:
    """The conversation as text turns (tool calls and results written out as text)."""
    turns: list[dict[str, Any]] = []
    for item in history:
        if item.role == "user":
            role, text = "user", item.text
        elif item.role == "assistant":
            role, text = "model", item.text
        elif item.role == "tool_call":
            role, text = "model", f"[called {item.name} with {item.text}]"
        else:
            role, text = "user", f"[{item.name} returned {item.text}]"
        if turns and turns[-1]["role"] == role:
            turns[-1]["parts"].append({"text": text})
        else:
            turns.append({"role": role, "parts": [{"text": text}]})
    return turns


def user_turn(text: str) -> dict[str, Any]:
    return {
        "clientContent": {
            "turns": [{"role": "user", "parts": [{"text": text}]}],
            "turnComplete": True,
        }
    }


def parse_duration(value: str) -> float:
    try:
        return float(value.rstrip("s"))
    except ValueError:
        return 0.0
