"""Emulator of OpenAI's Realtime API (GA protocol) over WebSocket.

`RealtimeEmulator.app()` serves it; each accepted connection is an
`EmulatedRealtimeSession` driven by a `RealtimeScript` of responses and user transcripts.
"""

from caller_engine.sim.openai.realtime.responses import ItemRecord, ResponseRun
from caller_engine.sim.openai.realtime.script import RealtimeScript, ScriptedResponse
from caller_engine.sim.openai.realtime.server import RealtimeEmulator
from caller_engine.sim.openai.realtime.session import EmulatedRealtimeSession
from caller_engine.sim.openai.realtime.validation import check_client_event

__all__ = [
    "EmulatedRealtimeSession",
    "ItemRecord",
    "RealtimeEmulator",
    "RealtimeScript",
    "ResponseRun",
    "ScriptedResponse",
    "check_client_event",
]
