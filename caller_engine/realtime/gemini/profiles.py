"""Per-model-family behaviour of Gemini Live, in one table instead of scattered branches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class ModelProfile:
    family: str
    bundled: bool  # several fields per serverContent (audio + transcript + turnComplete)
    text_via_realtime_input: bool  # speak-first / injected text as realtimeInput.text
    tool_behavior: Literal["BLOCKING", "NON_BLOCKING"]
    scheduling: str | None  # FunctionResponse.scheduling for NON_BLOCKING calls
    thinking: dict[str, Any] | None  # generationConfig.thinkingConfig, None: not sent


PROFILES: tuple[tuple[str, ModelProfile], ...] = (
    ("gemini-3.8", ModelProfile("3.8", True, False, "NON_BLOCKING", "WHEN_IDLE", None)),
    ("gemini-3.1", ModelProfile("3.1", True, True, "BLOCKING", None, None)),
    ("gemini-2.5", ModelProfile("2.5", False, False, "BLOCKING", None, {"thinkingBudget": 0})),
    ("gemini-live-2.5", ModelProfile("2.5", False, False, "BLOCKING", None, None)),
)
DEFAULT = PROFILES[0][1]


def profile_for(model: str) -> ModelProfile:
    name = model.removeprefix("models/")
    for prefix, profile in PROFILES:
        if name.startswith(prefix):
            return profile
    return DEFAULT
