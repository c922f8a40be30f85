"""The realtime providers this build can use: one registry entry per provider.

An entry names how to build the provider's connector from the settings and its default voice.
Adding a provider is an entry here, its credentials in `config.PROVIDER_CREDENTIALS`, and its
settings. A provider's modules are imported when its connector is built, so a deployment
loads only the providers it has credentials for (numpy and soxr only for those that convert
audio, the HTTP/2 stack only for Nova Sonic).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from caller_engine.config import Settings
from caller_engine.realtime.base import RealtimeConnector


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    connector: Callable[[Settings], RealtimeConnector]
    default_voice: Callable[[Settings], str]


def _openai(settings: Settings) -> RealtimeConnector:
    from caller_engine.realtime.openai import OpenAIRealtimeConnector

    return OpenAIRealtimeConnector(
        settings.openai_realtime_url,
        settings.openai_realtime_model,
        settings.openai_api_key or "",
        auth_header=settings.openai_realtime_auth_header,
    )


def _nova_sonic(settings: Settings) -> RealtimeConnector:
    from caller_engine.aws.sigv4 import Credentials
    from caller_engine.realtime.nova_sonic import (
        BedrockTarget,
        NovaSonicConnector,
        NovaSonicOptions,
    )

    credentials = Credentials(
        settings.aws_access_key_id or "",
        settings.aws_secret_access_key or "",
        settings.aws_session_token or None,
    )
    target = BedrockTarget(
        settings.bedrock_url, settings.aws_region, settings.nova_sonic_model_id, credentials
    )
    return NovaSonicConnector(NovaSonicOptions(target, renew_after=settings.nova_sonic_renew_after))


def _elevenlabs(settings: Settings) -> RealtimeConnector:
    from caller_engine.realtime.elevenlabs.connector import ElevenLabsConnector
    from caller_engine.realtime.elevenlabs.gate import slice_bytes

    return ElevenLabsConnector(
        settings.elevenlabs_api_url,
        settings.elevenlabs_agent_id or "",
        settings.elevenlabs_api_key,
        slice_bytes=slice_bytes(settings.playback_mark_ms * 8),
    )


def _gemini(settings: Settings) -> RealtimeConnector:
    from caller_engine.realtime.gemini import GeminiLiveConnector

    return GeminiLiveConnector(
        settings.gemini_live_url,
        settings.gemini_model,
        settings.gemini_api_key or "",
        input_rate=settings.gemini_input_rate,
    )


PROVIDERS: dict[str, Provider] = {
    "openai": Provider("openai", _openai, lambda s: s.openai_voice),
    "nova_sonic": Provider("nova_sonic", _nova_sonic, lambda s: s.nova_sonic_voice),
    "gemini": Provider("gemini", _gemini, lambda s: s.gemini_voice),
    # The agent's own voice unless the call names one (a voice id, as a TTS override).
    "elevenlabs": Provider("elevenlabs", _elevenlabs, lambda s: ""),
}


def build_connectors(settings: Settings) -> dict[str, RealtimeConnector]:
    """A connector for every provider whose credentials are configured."""
    return {
        name: PROVIDERS[name].connector(settings)
        for name in settings.configured_providers
        if name in PROVIDERS
    }


def default_voice(settings: Settings, provider: str) -> str:
    return PROVIDERS[provider].default_voice(settings)
