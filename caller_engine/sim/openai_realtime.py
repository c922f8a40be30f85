"""Emulator of OpenAI's Realtime API (GA): see the `caller_engine.sim.realtime` package."""

from caller_engine.sim.realtime import (
    EmulatedRealtimeSession,
    RealtimeEmulator,
    RealtimeScript,
    ScriptedResponse,
    check_client_event,
)

__all__ = [
    "EmulatedRealtimeSession",
    "RealtimeEmulator",
    "RealtimeScript",
    "ScriptedResponse",
    "check_client_event",
]
