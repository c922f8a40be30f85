"""What the record shows about the delivery of its result."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

DeliveryStatus = Literal["pending", "delivering", "delivered", "failed"]


@dataclass(frozen=True, slots=True)
class DeliveryState:
    """One call's result delivery. `delivering` means an attempt holds a live lease."""

    state: DeliveryStatus
    url: str
    attempts: int
    enqueued_at: datetime
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    last_status: int | None
    last_error: str | None
