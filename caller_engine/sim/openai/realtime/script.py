"""What the emulated model says and hears: scripted responses and user transcripts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ScriptedResponse:
    """One model response.

    `text` is the agent line carried by the transcript (or text) events. `audio` is the
    μ-law to stream; when it is None a non-silent tone of `audio_ms` is streamed instead.
    Each `(name, arguments)` in `tool_calls` becomes a function_call output item after the
    message. A response with no text, no audio and tool calls carries no message item.
    """

    text: str = ""
    audio: bytes | None = None
    audio_ms: int = 400
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def has_message(self) -> bool:
        return bool(self.text) or self.audio is not None or not self.tool_calls


def _okay() -> ScriptedResponse:
    return ScriptedResponse(text="Okay.")


@dataclass
class RealtimeScript:
    """Consumed in order: one response per response the server generates (client
    `response.create` or a VAD auto-response) and one transcript per committed user
    utterance. When either runs out, `default_response` / `default_transcript` is used."""

    responses: list[ScriptedResponse] = field(default_factory=list)
    user_transcripts: list[str] = field(default_factory=list)
    default_response: ScriptedResponse = field(default_factory=_okay)
    default_transcript: str = ""

    def next_response(self) -> ScriptedResponse:
        return self.responses.pop(0) if self.responses else self.default_response

    def next_transcript(self) -> str:
        return self.user_transcripts.pop(0) if self.user_transcripts else self.default_transcript
