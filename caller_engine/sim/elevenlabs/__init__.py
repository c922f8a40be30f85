"""Emulator of ElevenLabs Agents: the conversation WebSocket and the REST calls we make."""

from caller_engine.sim.elevenlabs.agent import EmulatedAgent
from caller_engine.sim.elevenlabs.conversation import EmulatedConversation
from caller_engine.sim.elevenlabs.server import ElevenLabsEmulator

__all__ = ["ElevenLabsEmulator", "EmulatedAgent", "EmulatedConversation"]
