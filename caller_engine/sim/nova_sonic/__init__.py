"""Emulator of Amazon Nova Sonic on Bedrock (`InvokeModelWithBidirectionalStream`)."""

from caller_engine.sim.nova_sonic.auth import TEST_CREDENTIALS
from caller_engine.sim.nova_sonic.server import NovaSonicEmulator
from caller_engine.sim.nova_sonic.session import EmulatedNovaSession

__all__ = ["TEST_CREDENTIALS", "EmulatedNovaSession", "NovaSonicEmulator"]
