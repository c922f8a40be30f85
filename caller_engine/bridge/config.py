"""The model session configuration of one call: defaults, environment, per-call overrides."""

from __future__ import annotations

from caller_engine.calls.models import AgentOverrides
from caller_engine.config import Settings
from caller_engine.prompts import build_prompt
from caller_engine.realtime.base import SessionConfig
from caller_engine.realtime.providers import default_voice
from caller_engine.tools.registry import Tool

_DAYS = {
    "mon": "Mon",
    "tue": "Tue",
    "wed": "Wed",
    "thu": "Thu",
    "fri": "Fri",
    "sat": "Sat",
    "sun": "Sun",
}


def working_hours(settings: Settings) -> str:
    days = settings.working_days.split(",")
    span = f"{_DAYS[days[0]]}–{_DAYS[days[-1]]}" if len(days) > 1 else _DAYS[days[0]]
    return f"{span} {settings.workday_start_hour:02d}:00–{settings.workday_end_hour:02d}:00"


def default_instructions(settings: Settings, tool_names: set[str]) -> str:
    if settings.system_prompt:
        return settings.system_prompt
    return build_prompt(
        settings.business_name,
        settings.business_type,
        working_hours(settings),
        settings.business_services,
        appointment_minutes=settings.appointment_minutes,
        timezone=settings.business_timezone,
        calendar="check_availability" in tool_names,
        sms="send_sms" in tool_names,
    )


def call_provider(settings: Settings, agent: AgentOverrides) -> str:
    return agent.provider or settings.realtime_provider


def session_config(
    settings: Settings, agent: AgentOverrides, tools: list[Tool], provider: str | None = None
) -> SessionConfig:
    """The session of one call on `provider` (the call's own by default). A per-call voice
    belongs to the call's own provider; a fallback provider speaks with its default voice."""
    names = {t.name for t in tools}
    own = call_provider(settings, agent)
    provider = provider or own
    voice = agent.voice if agent.voice and provider == own else default_voice(settings, provider)
    return SessionConfig(
        instructions=agent.instructions or default_instructions(settings, names),
        voice=voice,
        tools=[t.schema() for t in tools],
        vad_type=settings.vad_type,
        vad_threshold=settings.vad_threshold,
        vad_silence_ms=settings.vad_silence_ms,
        vad_prefix_ms=settings.vad_prefix_ms,
        interrupt_response=settings.vad_interrupt_response,
        transcription_model=settings.openai_transcription_model,
        noise_reduction=None if settings.noise_reduction == "off" else settings.noise_reduction,
        greeting=agent.greeting,
        call_instructions=agent.instructions,
        metadata=dict(agent.metadata),
    )


def greeting_instructions(config: SessionConfig, greeting: str | None) -> str:
    """Instructions for the first response (they replace the session's for that response)."""
    cue = (
        f'Start the call now by saying, in your own natural words: "{greeting}"'
        if greeting
        else "Start the call now: greet the person, say who you are and why you are calling."
    )
    return f"{config.instructions}\n\n{cue}"
