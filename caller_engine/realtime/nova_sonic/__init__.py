"""Amazon Nova Sonic on Bedrock: HTTP/2 bidirectional event stream (see `session`)."""

from caller_engine.realtime.nova_sonic.session import (
    NovaSonicConnector,
    NovaSonicOptions,
    NovaSonicSession,
)
from caller_engine.realtime.nova_sonic.stream import BedrockTarget

__all__ = ["BedrockTarget", "NovaSonicConnector", "NovaSonicOptions", "NovaSonicSession"]
