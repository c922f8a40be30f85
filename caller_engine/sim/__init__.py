"""Protocol-faithful emulators of every peer Caller Engine talks to.

They live in the package because the simulator (`caller-engine simulate`), the load-replay
tool and the tests all use them; the real client libraries are pointed at them through the
endpoint settings (TWILIO_API_BASE_URL, OPENAI_REALTIME_URL, ...).
"""
