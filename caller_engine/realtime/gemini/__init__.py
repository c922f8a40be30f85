"""Google Gemini Live: connector and session (see `session.py`)."""

from caller_engine.realtime.gemini.session import GeminiLiveConnector, GeminiLiveSession

__all__ = ["GeminiLiveConnector", "GeminiLiveSession"]
