"""Emulator of Google's Gemini Live API (see `emulator.py`)."""

from caller_engine.sim.gemini.emulator import GeminiConnection, GeminiLiveEmulator
from caller_engine.sim.gemini.generate import GenerateContentEmulator
from caller_engine.sim.gemini.script import GeminiResponse, GeminiScript, tone_pcm

__all__ = [
    "GeminiConnection",
    "GeminiLiveEmulator",
    "GeminiResponse",
    "GeminiScript",
    "GenerateContentEmulator",
    "tone_pcm",
]
