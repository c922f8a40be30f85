"""Emulators of OpenAI's APIs: the Realtime API (`realtime/`) and Chat Completions (`chat.py`)."""
