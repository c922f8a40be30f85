"""The outbox interface: durable result deliveries, claimed under a lease.

A claim bumps the attempt counter and leases the row to one owner until `lease_until`.
Every later write names the owner and the attempt it claimed, so an owner whose lease
expired (a crashed or stalled instance) can no longer change a row another owner took
over. A delivery is therefore sent at least once and never by two owners at the same
moment while their leases hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from caller_engine.calls.models import CallRecord
from caller_engine.results.state import DeliveryState


@dataclass(frozen=True, slots=True)
class Claim:
    callback_id: str
    url: str
    payload: bytes
    attempt: int
    enqueued_at: datetime
    owner: str


class NoResult(Exception):
    """There is no result to deliver for this callbackId (yet)."""


class NoUrl(Exception):
    """Neither the call nor the configuration names a result webhook URL."""


class Outbox(Protocol):
    async def claim(
        self, owner: str, lease: float, limit: int, callback_id: str | None = None
    ) -> list[Claim]:
        """Lease up to `limit` due deliveries (or the one for `callback_id` if it is due)."""

    async def succeeded(self, claim: Claim, status: int) -> bool: ...

    async def retry_at(
        self, claim: Claim, when: datetime, status: int | None, error: str
    ) -> bool: ...

    async def failed(self, claim: Claim, status: int | None, error: str) -> bool: ...

    async def release(self, owner: str) -> int:
        """Give back every lease `owner` holds (on shutdown), so others need not wait."""

    async def requeue(
        self, callback_id: str, default_url: str | None, *, url: str | None = None
    ) -> DeliveryState:
        """Queue the call's current result again now, with a fresh retry period, to `url`,
        else where it went before, else the call's own URL, else `default_url`."""

    async def next_due(self) -> datetime | None:
        """When the earliest pending delivery becomes due (or its lease expires)."""

    async def calls_missing_result(
        self, ended_before: datetime, limit: int
    ) -> Sequence[CallRecord]:
        """Calls that ended before `ended_before` and still have no result: their bridge
        never reported, or building the result at the final status callback failed."""
