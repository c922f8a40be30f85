"""Shapes of the GA Realtime server: ids, the session object, items, responses, errors.

Pure builders, no I/O. Field sets follow `openai.types.realtime`; the session object also
carries `object`, `id` and `expires_at`, which the live server sends in `session.created`.
Error codes and messages follow what the live service answers; where its exact wording is
not documented the message is marked as the emulator's own in the function's docstring.
"""

from __future__ import annotations

import copy
import secrets
import string
import time
from dataclasses import dataclass
from typing import Any

_ALPHABET = string.ascii_letters + string.digits
_ID_CHARS = bytes(ord(_ALPHABET[value % len(_ALPHABET)]) for value in range(256))

DEFAULT_INSTRUCTIONS = (
    "Your knowledge cutoff is 2023-10. You are a helpful, witty, and friendly AI. "
    "Act like a human, but remember that you aren't a human."
)
SESSION_LIFETIME_S = 3600


def new_id(prefix: str) -> str:
    """An id shaped like the server's: `resp_`, `item_`, `call_`... plus 21 characters."""
    # One random byte per character, mapped onto the alphabet (fast: an id per event).
    return prefix + "_" + secrets.token_bytes(21).translate(_ID_CHARS).decode("ascii")


# -- session ---------------------------------------------------------------------------


def default_turn_detection(kind: str = "server_vad") -> dict[str, Any]:
    if kind == "semantic_vad":
        return {
            "type": "semantic_vad",
            "eagerness": "auto",
            "create_response": True,
            "interrupt_response": True,
        }
    return {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 200,
        "idle_timeout_ms": None,
        "create_response": True,
        "interrupt_response": True,
    }


def default_session(model: str) -> dict[str, Any]:
    """The session object of `session.created`: the server's defaults (PCM 24 kHz, VAD on)."""
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": new_id("sess"),
        "model": model,
        "output_modalities": ["audio"],
        "instructions": DEFAULT_INSTRUCTIONS,
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "expires_at": int(time.time()) + SESSION_LIFETIME_S,
        "include": None,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": default_turn_detection(),
            },
            "output": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "voice": "alloy",
                "speed": 1.0,
            },
        },
    }


def merge_session(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Apply a `session.update` body: only present fields change; `null` clears.

    `audio`, `audio.input` and `audio.output` merge key by key; a turn_detection of the
    same type merges onto the current one, a new type starts from that type's defaults;
    every other field (formats, transcription, tools...) is replaced as a whole.
    """
    merged = copy.deepcopy(current)
    for key, value in update.items():
        if key == "audio" and isinstance(value, dict):
            audio = merged.setdefault("audio", {})
            for side in ("input", "output"):
                if isinstance(value.get(side), dict):
                    target = audio.setdefault(side, {})
                    for sub_key, sub_value in value[side].items():
                        if sub_key == "turn_detection" and isinstance(sub_value, dict):
                            target[sub_key] = _merge_turn_detection(target.get(sub_key), sub_value)
                        else:
                            target[sub_key] = copy.deepcopy(sub_value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _merge_turn_detection(current: Any, update: dict[str, Any]) -> dict[str, Any]:
    kind = update.get("type", "server_vad")
    base = current if isinstance(current, dict) and current.get("type") == kind else None
    return {**(base or default_turn_detection(kind)), **update}


def audio_bytes_per_ms(audio_format: dict[str, Any] | None) -> int:
    """pcmu/pcma: 8 kHz, one byte per sample; pcm: 24 kHz, 16-bit."""
    kind = (audio_format or {}).get("type", "audio/pcm")
    return 8 if kind in ("audio/pcmu", "audio/pcma") else 48


# -- items -----------------------------------------------------------------------------


def user_audio_item(item_id: str, transcript: str | None = None) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_audio", "transcript": transcript}],
    }


def assistant_item(item_id: str, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call",
        "status": status,
        "name": name,
        "call_id": call_id,
        "arguments": arguments,
    }


def client_item(item: dict[str, Any], item_id: str) -> dict[str, Any]:
    """The server's view of an item a client created: id, object and status filled in."""
    stored = copy.deepcopy(item)
    stored["id"] = item_id
    stored["object"] = "realtime.item"
    stored.setdefault("status", "completed")
    return stored


# -- responses -------------------------------------------------------------------------


def response_usage(
    input_text: int, input_audio: int, output_text: int, output_audio: int
) -> dict[str, Any]:
    inputs = input_text + input_audio
    outputs = output_text + output_audio
    return {
        "total_tokens": inputs + outputs,
        "input_tokens": inputs,
        "output_tokens": outputs,
        "input_token_details": {
            "text_tokens": input_text,
            "audio_tokens": input_audio,
            "image_tokens": 0,
            "cached_tokens": 0,
            "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": output_text, "audio_tokens": output_audio},
    }


def transcription_usage(audio_ms: int, transcript: str) -> dict[str, Any]:
    audio_tokens = max(1, audio_ms // 100)
    text_tokens = len(transcript.split())
    return {
        "type": "tokens",
        "total_tokens": audio_tokens + text_tokens,
        "input_tokens": audio_tokens,
        "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
        "output_tokens": text_tokens,
    }


def response_object(
    response_id: str,
    *,
    status: str,
    conversation_id: str | None,
    output: list[dict[str, Any]],
    modalities: list[str],
    audio_output: dict[str, Any],
    max_output_tokens: Any = "inf",
    metadata: dict[str, Any] | None = None,
    status_details: dict[str, Any] | None = None,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "object": "realtime.response",
        "id": response_id,
        "status": status,
        "status_details": status_details,
        "output": output,
        "conversation_id": conversation_id,
        "output_modalities": modalities,
        "max_output_tokens": max_output_tokens,
        "audio": {"output": audio_output},
        "usage": usage,
        "metadata": metadata,
    }


def rate_limits() -> dict[str, Any]:
    return {
        "rate_limits": [
            {"name": "requests", "limit": 20000, "remaining": 19999, "reset_seconds": 0.003},
            {"name": "tokens", "limit": 15000000, "remaining": 14995000, "reset_seconds": 0.02},
        ]
    }


# -- errors ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejection:
    """A server `error` event body, before the ids are filled in."""

    code: str | None
    message: str
    param: str | None = None
    type: str = "invalid_request_error"

    def body(self, client_event_id: str | None) -> dict[str, Any]:
        return {
            "type": self.type,
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "event_id": client_event_id,
        }


def active_response(response_id: str) -> Rejection:
    return Rejection(
        "conversation_already_has_active_response",
        f"Conversation already has an active response in progress: {response_id}. "
        "Wait until the response is finished before creating a new one.",
    )


def cancel_not_active() -> Rejection:
    return Rejection("response_cancel_not_active", "Cancellation failed: no active response found")


def truncate_beyond_audio(audio_ms: int, requested_ms: int) -> Rejection:
    return Rejection(
        "invalid_value",
        f"Audio content of {audio_ms}ms is already shorter than {requested_ms}ms",
        "audio_end_ms",
    )


def truncate_not_audio() -> Rejection:
    return Rejection(
        "unsupported_content_type", "Only model output audio messages can be truncated"
    )


def item_not_found(item_id: str, param: str = "item_id") -> Rejection:
    """Code as the server's; the message wording is the emulator's own."""
    return Rejection("item_not_found", f"Item with item_id '{item_id}' not found.", param)


def unknown_call_id(call_id: str) -> Rejection:
    """The emulator's own wording for a function_call_output with no matching call."""
    return Rejection(
        "invalid_value",
        f"Tool call ID '{call_id}' not found in conversation.",
        "item.call_id",
    )


def voice_locked() -> Rejection:
    return Rejection(
        "cannot_update_voice",
        "Cannot update a conversation's voice if assistant audio is present.",
        "session.audio.output.voice",
    )


def model_locked() -> Rejection:
    """The emulator's own wording: the model is fixed by the connection URL."""
    return Rejection(
        "invalid_value",
        "The session model cannot be changed after the session is created.",
        "session.model",
    )


def session_type_locked(kind: str) -> Rejection:
    return Rejection(
        "invalid_value", f"Cannot change the session type to '{kind}'.", "session.type"
    )


def commit_empty(buffered_ms: float) -> Rejection:
    return Rejection(
        "input_audio_buffer_commit_empty",
        "Error committing input audio buffer: buffer too small. Expected at least 100ms of "
        f"audio, but buffer only has {buffered_ms:.2f}ms of audio.",
    )


def bad_base64() -> Rejection:
    """The emulator's own wording."""
    return Rejection("invalid_value", "Invalid 'audio'. Expected base64-encoded audio.", "audio")


def invalid_json() -> Rejection:
    return Rejection("invalid_json", "Invalid event: failed to parse JSON value.")


def binary_frame() -> Rejection:
    """The emulator's own wording."""
    return Rejection("invalid_event", "Expected a text WebSocket message; got a binary frame.")


def output_buffer_clear_over_websocket() -> Rejection:
    """The emulator's own wording: the event exists for WebRTC and SIP connections only."""
    return Rejection(
        "invalid_value",
        "output_audio_buffer.clear is only supported for WebRTC and SIP connections.",
        "type",
    )


def content_index_invalid(index: int) -> Rejection:
    return Rejection(
        "invalid_value",
        f"Invalid content_index {index}: the item has one content part.",
        "content_index",
    )
