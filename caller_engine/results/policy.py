"""Retry policy of result deliveries: what an answer means, and when to try again. Pure."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Literal

Verdict = Literal["delivered", "retry", "reject"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    backoff_base: float = 2.0
    backoff_cap: float = 600.0
    retry_period: float = 86_400.0


def classify(status: int | None) -> Verdict:
    """2xx delivered; network errors (None), 5xx and 429 retried; anything else rejected."""
    if status is None or status == 429 or status >= 500:
        return "retry"
    if 200 <= status < 300:
        return "delivered"
    return "reject"


def backoff_delay(
    attempt: int, policy: RetryPolicy, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): exponential with
    "equal jitter", i.e. uniformly between half and all of min(cap, base * 2^(attempt-1))."""
    ceiling = min(policy.backoff_cap, policy.backoff_base * 2.0 ** max(attempt - 1, 0))
    return ceiling / 2 + rand() * ceiling / 2


def retry_after(header: str | None, now: datetime, cap: float) -> float | None:
    """Seconds from a Retry-After header (delta seconds or HTTP date), capped; None if absent."""
    if not header:
        return None
    value = header.strip()
    if value.isdigit():
        return min(float(value), cap)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max((when - now).total_seconds(), 0.0), cap)


def next_attempt(
    attempt: int,
    now: datetime,
    enqueued_at: datetime,
    policy: RetryPolicy,
    retry_after_s: float | None = None,
    rand: Callable[[], float] = random.random,
) -> datetime | None:
    """When to try again after failed attempt `attempt`, or None when the retry period is
    over. The last attempt is placed at the end of the period rather than skipped."""
    deadline = enqueued_at + timedelta(seconds=policy.retry_period)
    if now >= deadline:
        return None
    delay = backoff_delay(attempt, policy, rand)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return min(now + timedelta(seconds=delay), deadline)
