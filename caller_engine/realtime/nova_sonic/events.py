"""Nova Sonic input events, built as the service expects them (`{"event": {...}}`).

Audio is LPCM 16-bit mono at 8 kHz both ways (the telephone rate: the bridge converts μ-law
to PCM16 and back, no resampling). Tool input schemas travel as JSON strings.
"""

from __future__ import annotations

from typing import Any

import orjson

from caller_engine.realtime.base import HistoryItem, SessionConfig

RATE = 8000
NESTED_TURN_DETECTION_MODELS = ("amazon.nova-2-sonic-v1:0", "amazon.nova-2-5-sonic")
# Interactive text the service must not read as caller speech: the model is told to speak.
SPEAK_FIRST_CUE = "Start the call now: greet the person, say who you are and why you are calling."

Event = dict[str, Any]


def _lpcm() -> dict[str, Any]:
    return {
        "mediaType": "audio/lpcm",
        "sampleRateHertz": RATE,
        "sampleSizeBits": 16,
        "channelCount": 1,
        "encoding": "base64",
        "audioType": "SPEECH",
    }


def session_start(model_id: str, sensitivity: str = "MEDIUM") -> Event:
    body: dict[str, Any] = {
        "inferenceConfiguration": {"maxTokens": 1024, "topP": 0.9, "temperature": 0.7}
    }
    if model_id in NESTED_TURN_DETECTION_MODELS:
        body["turnDetectionConfiguration"] = {"endpointingSensitivity": sensitivity}
    return {"event": {"sessionStart": body}}


def tool_spec(tool: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-shaped function definition as a Nova `toolSpec`."""
    return {
        "toolSpec": {
            "name": tool["name"],
            "description": tool.get("description", ""),
            "inputSchema": {"json": orjson.dumps(tool.get("parameters") or {}).decode()},
        }
    }


def prompt_start(prompt: str, config: SessionConfig) -> Event:
    body: dict[str, Any] = {
        "promptName": prompt,
        "textOutputConfiguration": {"mediaType": "text/plain"},
        "audioOutputConfiguration": {**_lpcm(), "voiceId": config.voice},
    }
    if config.tools:
        body["toolUseOutputConfiguration"] = {"mediaType": "application/json"}
        body["toolConfiguration"] = {"tools": [tool_spec(tool) for tool in config.tools]}
    return {"event": {"promptStart": body}}


def text_content(
    prompt: str, content: str, role: str, text: str, *, interactive: bool
) -> list[Event]:
    return [
        {
            "event": {
                "contentStart": {
                    "promptName": prompt,
                    "contentName": content,
                    "type": "TEXT",
                    "interactive": interactive,
                    "role": role,
                    "textInputConfiguration": {"mediaType": "text/plain"},
                }
            }
        },
        {"event": {"textInput": {"promptName": prompt, "contentName": content, "content": text}}},
        content_end(prompt, content),
    ]


def audio_content_start(prompt: str, content: str) -> Event:
    return {
        "event": {
            "contentStart": {
                "promptName": prompt,
                "contentName": content,
                "type": "AUDIO",
                "interactive": True,
                "role": "USER",
                "audioInputConfiguration": _lpcm(),
            }
        }
    }


def audio_input_parts(prompt: str, content: str) -> tuple[bytes, bytes]:
    """The JSON of an `audioInput` event around its base64 content: prefix, suffix."""
    prefix = orjson.dumps(
        {"event": {"audioInput": {"promptName": prompt, "contentName": content, "content": ""}}}
    )
    cut = prefix.index(b'"content":""') + len(b'"content":"')
    return prefix[:cut], prefix[cut:]


def tool_result(prompt: str, content: str, tool_use_id: str, output: str) -> list[Event]:
    return [
        {
            "event": {
                "contentStart": {
                    "promptName": prompt,
                    "contentName": content,
                    "interactive": False,
                    "type": "TOOL",
                    "role": "TOOL",
                    "toolResultInputConfiguration": {
                        "toolUseId": tool_use_id,
                        "type": "TEXT",
                        "textInputConfiguration": {"mediaType": "text/plain"},
                    },
                }
            }
        },
        {
            "event": {
                "toolResult": {"promptName": prompt, "contentName": content, "content": output}
            }
        },
        content_end(prompt, content),
    ]


def content_end(prompt: str, content: str) -> Event:
    return {"event": {"contentEnd": {"promptName": prompt, "contentName": content}}}


def prompt_end(prompt: str) -> Event:
    return {"event": {"promptEnd": {"promptName": prompt}}}


def session_end() -> Event:
    return {"event": {"sessionEnd": {}}}


def history_turns(history: list[HistoryItem]) -> list[tuple[str, str]]:
    """The conversation as alternating USER/ASSISTANT text, starting with USER: consecutive
    turns of one role merge; tool calls and outputs become bracketed notes in the flow."""
    turns: list[tuple[str, str]] = []
    for item in history:
        if item.role == "user":
            role, text = "USER", item.text
        elif item.role == "assistant":
            role, text = "ASSISTANT", item.text
        elif item.role == "tool_call":
            role, text = "ASSISTANT", f"[called {item.name} with {item.text}]"
        else:
            role, text = "USER", f"[result: {item.text}]"
        if not text.strip():
            continue
        if turns and turns[-1][0] == role:
            turns[-1] = (role, f"{turns[-1][1]}\n{text}")
        else:
            turns.append((role, text))
    if turns and turns[0][0] != "USER":
        turns.insert(0, ("USER", "[The call was answered.]"))
    return turns
