"""An emulated ElevenLabs agent: the settings that shape its conversations.

Defaults follow the service: overrides off, the documented default `client_events`, audio
formats as configured (set both to `ulaw_8000` for telephony). `{{name}}` placeholders in the
prompt and first message are required dynamic variables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CLIENT_EVENTS = (
    "audio",
    "interruption",
    "agent_response",
    "user_transcript",
    "tentative_user_transcript",
    "conversation_initiation_metadata",
    "ping",
)
# Every overridable field, as a path under conversation_config_override.
OVERRIDABLE = frozenset(
    {
        "agent.first_message",
        "agent.language",
        "agent.max_conversation_duration_message",
        "agent.prompt.prompt",
        "agent.prompt.llm",
        "agent.prompt.tool_ids",
        "agent.prompt.native_mcp_server_ids",
        "agent.prompt.knowledge_base",
        "tts.model_id",
        "tts.voice_id",
        "tts.stability",
        "tts.speed",
        "tts.similarity_boost",
        "asr.keywords",
        "turn.soft_timeout_config.message",
        "conversation.text_only",
        "conversation.client_events",
    }
)
_VARIABLE = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")


@dataclass
class EmulatedAgent:
    agent_id: str
    name: str = "Emulated agent"
    prompt: str = "You are a helpful phone agent."
    first_message: str | None = None  # None: the text of the script's first line
    language: str = "en"
    voice_id: str = "21m00Tcm4TlvDq8ikWAM"
    input_format: str = "ulaw_8000"
    output_format: str = "ulaw_8000"
    client_events: list[str] = field(default_factory=lambda: list(DEFAULT_CLIENT_EVENTS))
    allowed_overrides: set[str] = field(default_factory=set)
    enable_auth: bool = False
    tool_ids: list[str] = field(default_factory=list)
    end_call_tool: bool = True  # the `end_call` system tool
    disable_first_message_interruptions: bool = False

    def override_paths(self, override: dict[str, Any], prefix: str = "") -> list[str]:
        """The leaf fields an override sets (null values are not overrides)."""
        paths: list[str] = []
        for key, value in override.items():
            path = f"{prefix}{key}"
            if value is None:
                continue
            if isinstance(value, dict) and path not in OVERRIDABLE:
                paths.extend(self.override_paths(value, path + "."))
            else:
                paths.append(path)
        return paths

    def refused_overrides(self, override: dict[str, Any]) -> list[str]:
        return [p for p in self.override_paths(override) if p not in self.allowed_overrides]

    def allow_overrides(self, *paths: str) -> None:
        unknown = set(paths) - OVERRIDABLE
        if unknown:
            raise ValueError(f"not overridable: {sorted(unknown)}")
        self.allowed_overrides.update(paths)

    def platform_overrides(self) -> dict[str, Any]:
        """`platform_settings.overrides.conversation_config_override` as booleans."""
        tree: dict[str, Any] = {}
        for path in sorted(OVERRIDABLE):
            node = tree
            *parents, leaf = path.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = path in self.allowed_overrides
        return tree


def required_variables(*texts: str | None) -> set[str]:
    return {m.group(1) for text in texts if text for m in _VARIABLE.finditer(text)}


def fill_variables(text: str, variables: dict[str, Any]) -> str:
    return _VARIABLE.sub(lambda m: str(variables.get(m.group(1), m.group(0))), text)
