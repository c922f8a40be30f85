"""The caller clips shipped with the package: μ-law 8 kHz mono lines a callee can say.

See `caller_engine/sim/clips/README.md` for how they were made.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

# Clip name → what is said in it.
CLIPS: dict[str, str] = {
    "hello": "Hello?",
    "book_tomorrow": "Hi, I'd like to book an appointment for tomorrow.",
    "ten_am": "Ten in the morning works for me.",
    "name_alex": "My name is Alex Morgan.",
    "text_confirmation": "Yes, please text me a confirmation.",
    "goodbye": "That's all, thank you. Goodbye.",
    "wait_question": "Wait, sorry, can I ask something?",
    "talk_to_someone": "Can I talk to someone, please?",
    "callback_yes": "Yes, please have someone call me back.",
    "stop_calling": "Please take me off your list. Don't call me again.",
    "voicemail": (
        "Hi, you've reached Alex Morgan. I can't take your call right now. "
        "Please leave a message after the tone."
    ),
    "beep": "(answering-machine tone)",
}

BYTES_PER_MS = 8


@cache
def load_clip(name: str) -> bytes:
    """The raw μ-law bytes of clip `name`; KeyError for an unknown name."""
    if name not in CLIPS:
        raise KeyError(f"unknown clip {name!r}; known: {', '.join(sorted(CLIPS))}")
    return resources.files("caller_engine.sim").joinpath("clips", f"{name}.ulaw").read_bytes()


def clip_ms(name: str) -> int:
    """Length of a clip in milliseconds."""
    return len(load_clip(name)) // BYTES_PER_MS
