"""Emulator of the Google APIs the tools use: OAuth token endpoint, Calendar v3, Gmail v1."""

from caller_engine.sim.google.calendar import EmulatedCalendar, EmulatedEvent
from caller_engine.sim.google.emulator import GoogleEmulator, RecordedRequest
from caller_engine.sim.google.gmail import SentMessage
from caller_engine.sim.google.keys import new_service_account_key

__all__ = [
    "EmulatedCalendar",
    "EmulatedEvent",
    "GoogleEmulator",
    "RecordedRequest",
    "SentMessage",
    "new_service_account_key",
]
