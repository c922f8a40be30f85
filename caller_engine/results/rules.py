"""Which result a call keeps. Pure.

One result per callbackId. The bridge produces the result of every call that streamed;
the record itself produces it (source "record") for calls that ended without a stream
(busy, no-answer, failed, canceled, a voicemail hang-up) or whose bridge never reported.
The first result is kept. A later one replaces it only if it is fuller — a bridge result
over a record-built one — and no delivery attempt of the first has begun; otherwise the
later result is dropped (and logged), so the orchestrator never sees two results.
"""

from __future__ import annotations

from typing import Literal

ResultSource = Literal["bridge", "record"]


def takes_result(current: str | None, delivery_started: bool, new: ResultSource) -> bool:
    if current is None:
        return True
    return current == "record" and new == "bridge" and not delivery_started
