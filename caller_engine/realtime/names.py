"""The names of the realtime providers the engine can speak to (a deployment configures some).

A call's `agent.provider` may only name these; a new provider adds its name here and its entry
in `providers.PROVIDERS`.
"""

from __future__ import annotations

from typing import Literal, get_args

ProviderName = Literal["openai", "gemini", "elevenlabs", "nova_sonic"]
PROVIDER_NAMES: frozenset[str] = frozenset(get_args(ProviderName))
