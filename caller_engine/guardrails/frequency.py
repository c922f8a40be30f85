"""The per-number frequency cap: at most N calls in any rolling window. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta


def cap_reached_until(
    dialed: Iterable[datetime], limit: int, window: timedelta, now: datetime
) -> datetime | None:
    """None when one more call is allowed at `now`; otherwise when it will be: the moment the
    oldest call that keeps the count at `limit` leaves the window. `limit` 0 is no cap.
    Calls stamped after `now` count too: a racing request may stamp its call later and
    commit it first."""
    if limit <= 0:
        return None
    recent = sorted(t for t in dialed if t > now - window)
    if len(recent) < limit:
        return None
    return recent[len(recent) - limit] + window
