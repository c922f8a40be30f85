"""The outbox on the call database (table `deliveries`).

Claims select due rows with FOR UPDATE SKIP LOCKED on PostgreSQL, so instances polling at
the same moment take disjoint rows; on SQLite the transaction itself (BEGIN IMMEDIATE) is
exclusive, so the same statements are safe there too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import and_, func, or_, select, type_coerce, update
from sqlalchemy.engine import Connection

from caller_engine.calls.gate import BACKGROUND, STORE_CONCURRENCY, PriorityGate
from caller_engine.calls.models import TERMINAL_STATUSES, CallRecord, utcnow
from caller_engine.calls.result import CallResult
from caller_engine.calls.schema import UtcDateTime, calls, deliveries
from caller_engine.calls.sql_engine import Database, Operation
from caller_engine.calls.sql_rows import delivery_from_row, record_from_row
from caller_engine.results.outbox import Claim, NoResult, NoUrl
from caller_engine.results.payload import encode_result
from caller_engine.results.state import DeliveryState

MAX_ERROR_CHARS = 2000
T = TypeVar("T")


class SqlOutbox:
    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], datetime] = utcnow,
        gate: PriorityGate | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.gate = gate or PriorityGate(STORE_CONCURRENCY)

    async def _transact(self, operation: Operation[T]) -> T:
        """Delivery is background work: it waits behind calls' store operations."""
        async with self.gate.slot(BACKGROUND):
            return await self.db.write(operation)

    async def _read(self, operation: Operation[T]) -> T:
        async with self.gate.slot(BACKGROUND):
            return await self.db.read(operation)

    def _due(self, now: datetime) -> Any:
        return and_(
            deliveries.c.state == "pending",
            deliveries.c.next_attempt_at <= now,
            or_(deliveries.c.lease_until.is_(None), deliveries.c.lease_until <= now),
        )

    async def claim(
        self, owner: str, lease: float, limit: int, callback_id: str | None = None
    ) -> list[Claim]:
        now = self.clock()
        query = select(
            deliveries.c.callback_id,
            deliveries.c.url,
            deliveries.c.payload,
            deliveries.c.attempts,
            deliveries.c.enqueued_at,
        ).where(self._due(now))
        if callback_id is not None:
            query = query.where(deliveries.c.callback_id == callback_id)
        query = (
            query.order_by(deliveries.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )

        def take(conn: Connection) -> list[Claim]:
            claims: list[Claim] = []
            for row in conn.execute(query).all():
                attempt = int(row.attempts) + 1
                conn.execute(
                    update(deliveries)
                    .where(deliveries.c.callback_id == row.callback_id)
                    .values(
                        attempts=attempt,
                        lease_owner=owner,
                        lease_until=now + timedelta(seconds=lease),
                        last_attempt_at=now,
                    )
                )
                claims.append(
                    Claim(
                        callback_id=row.callback_id,
                        url=row.url,
                        payload=bytes(row.payload),
                        attempt=attempt,
                        enqueued_at=row.enqueued_at,
                        owner=owner,
                    )
                )
            return claims

        return await self._transact(take)

    async def _settle(self, claim: Claim, **values: Any) -> bool:
        stmt = (
            update(deliveries)
            .where(
                deliveries.c.callback_id == claim.callback_id,
                deliveries.c.lease_owner == claim.owner,
                deliveries.c.attempts == claim.attempt,
                deliveries.c.state == "pending",
            )
            .values(lease_owner=None, lease_until=None, **values)
        )
        return await self._transact(lambda conn: bool(conn.execute(stmt).rowcount == 1))

    async def succeeded(self, claim: Claim, status: int) -> bool:
        return await self._settle(
            claim,
            state="delivered",
            delivered_at=self.clock(),
            next_attempt_at=None,
            last_status=status,
            last_error=None,
        )

    async def retry_at(self, claim: Claim, when: datetime, status: int | None, error: str) -> bool:
        return await self._settle(
            claim, next_attempt_at=when, last_status=status, last_error=error[:MAX_ERROR_CHARS]
        )

    async def failed(self, claim: Claim, status: int | None, error: str) -> bool:
        return await self._settle(
            claim,
            state="failed",
            next_attempt_at=None,
            last_status=status,
            last_error=error[:MAX_ERROR_CHARS],
        )

    async def release(self, owner: str) -> int:
        stmt = (
            update(deliveries)
            .where(deliveries.c.lease_owner == owner, deliveries.c.state == "pending")
            .values(lease_owner=None, lease_until=None)
        )
        return await self._transact(lambda conn: int(conn.execute(stmt).rowcount))

    async def requeue(
        self, callback_id: str, default_url: str | None, *, url: str | None = None
    ) -> DeliveryState:
        now = self.clock()

        def requeue(conn: Connection) -> DeliveryState:
            row = conn.execute(
                select(calls.c.result, calls.c.result_webhook_url)
                .where(calls.c.callback_id == callback_id)
                .with_for_update()
            ).first()
            if row is None or row.result is None:
                raise NoResult(callback_id)
            payload = encode_result(CallResult.model_validate(row.result))
            existing = conn.execute(
                select(deliveries.c.url)
                .where(deliveries.c.callback_id == callback_id)
                .with_for_update()
            ).first()
            values: dict[str, Any] = {
                "payload": payload,
                "state": "pending",
                "enqueued_at": now,
                "next_attempt_at": now,
                "lease_owner": None,
                "lease_until": None,
            }
            if url:
                values["url"] = url
            if existing is not None:
                conn.execute(
                    update(deliveries)
                    .where(deliveries.c.callback_id == callback_id)
                    .values(**values)
                )
            else:
                values.setdefault("url", row.result_webhook_url or default_url)
                if not values["url"]:
                    raise NoUrl(callback_id)
                conn.execute(
                    deliveries.insert().values(callback_id=callback_id, attempts=0, **values)
                )
            current = conn.execute(
                select(deliveries).where(deliveries.c.callback_id == callback_id)
            ).one()
            return delivery_from_row(current._mapping, now)

        return await self._transact(requeue)

    async def next_due(self) -> datetime | None:
        due = func.coalesce(deliveries.c.lease_until, deliveries.c.next_attempt_at)
        earliest = type_coerce(func.min(due), UtcDateTime())
        query = select(earliest).where(deliveries.c.state == "pending")
        value: datetime | None = await self._read(lambda conn: conn.execute(query).scalar())
        return value

    async def calls_missing_result(
        self, ended_before: datetime, limit: int
    ) -> Sequence[CallRecord]:
        query = (
            select(calls)
            .where(
                calls.c.status.in_(sorted(TERMINAL_STATUSES)),
                calls.c.result.is_(None),
                calls.c.ended_at <= ended_before,
            )
            .order_by(calls.c.ended_at)
            .limit(limit)
        )
        return await self._read(
            lambda conn: [record_from_row(r._mapping) for r in conn.execute(query)]
        )
