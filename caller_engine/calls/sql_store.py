"""CallStore on SQLAlchemy Core: SQLite (one process) or PostgreSQL (many instances).

Every change is a short transaction that locks the call's row (SELECT … FOR UPDATE on
PostgreSQL, BEGIN IMMEDIATE on SQLite), applies one pure mutation and writes the row back,
so callbacks for one call arriving at several instances at once never lose each other's
changes. Creation relies on the primary key (INSERT … ON CONFLICT DO NOTHING), never on a
check-then-insert. Saving a result and queueing its delivery happen in one transaction.
A database that is down, locked or full raises StoreUnavailable (calls.availability).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from loguru import logger
from sqlalchemy import ColumnElement, Row, and_, delete, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from caller_engine.calls import mutations
from caller_engine.calls.availability import guarded
from caller_engine.calls.gate import STORE_CONCURRENCY, PriorityGate
from caller_engine.calls.migrations import upgrade
from caller_engine.calls.models import CallRecord, DncEntry, StatusEvent, utcnow
from caller_engine.calls.result import CallResult
from caller_engine.calls.schema import calls, deliveries, do_not_call
from caller_engine.calls.sql_engine import create_engine, prepare, reading, writing
from caller_engine.calls.sql_rows import (
    delivery_from_row,
    dnc_from_row,
    dnc_values,
    record_from_row,
    record_values,
)
from caller_engine.calls.store import DuplicateCall, merged_listing
from caller_engine.calls.transfer import Transfer
from caller_engine.failures import describe
from caller_engine.guardrails.policy import Admission, CallRefused, admit
from caller_engine.results.payload import encode_result
from caller_engine.results.rules import ResultSource, takes_result
from caller_engine.results.sql_outbox import SqlOutbox

Clock = Callable[[], datetime]
PING_TIMEOUT = 2.0


async def _lock_number(conn: AsyncConnection, number: str) -> None:
    """Serialize, until the transaction ends, everything that admits or lists one number.
    PostgreSQL only: on SQLite every write transaction is already exclusive."""
    if conn.dialect.name == "postgresql":
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtext('caller_engine.number:' || :number))"),
            {"number": number},
        )


class SqlCallStore:
    def __init__(self, engine: AsyncEngine, *, clock: Clock = utcnow) -> None:
        self.engine = engine
        self.clock = clock
        self.gate = PriorityGate(STORE_CONCURRENCY)
        self.outbox = SqlOutbox(engine, clock=clock, gate=self.gate)

    @asynccontextmanager
    async def _begin(self) -> AsyncIterator[AsyncConnection]:
        """A transaction, once the gate lets this operation in (see calls.gate)."""
        async with self.gate.slot(), writing(self.engine) as conn:
            yield conn

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection]:
        async with self.gate.slot(), reading(self.engine) as conn:
            yield conn

    @classmethod
    async def open(
        cls, url: str, *, schema: str | None = None, clock: Clock = utcnow
    ) -> SqlCallStore:
        """Connect and bring the schema up to date."""
        engine = create_engine(url, schema=schema)
        try:
            await prepare(engine)
            await upgrade(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine, clock=clock)

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(PING_TIMEOUT), reading(self.engine) as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            logger.warning("database ping failed: {}", describe(exc))
            return False
        return True

    # -- reading ---------------------------------------------------------------------

    def _select(self) -> Any:
        return select(calls, *[c.label("d_" + c.name) for c in deliveries.c]).select_from(
            calls.outerjoin(deliveries, deliveries.c.callback_id == calls.c.callback_id)
        )

    def _record(self, row: Row[Any]) -> CallRecord:
        mapping = row._mapping
        delivery = None
        if mapping["d_callback_id"] is not None:
            d_row = {c.name: mapping["d_" + c.name] for c in deliveries.c}
            delivery = delivery_from_row(d_row, self.clock())
        return record_from_row(mapping, delivery)

    async def _one(self, where: ColumnElement[bool]) -> CallRecord | None:
        async with self._connect() as conn:
            row = (await conn.execute(self._select().where(where))).first()
        return self._record(row) if row is not None else None

    @guarded
    async def get(self, callback_id: str) -> CallRecord | None:
        return await self._one(calls.c.callback_id == callback_id)

    @guarded
    async def find_by_sid(self, call_sid: str) -> CallRecord | None:
        if not call_sid:
            return None
        return await self._one(calls.c.call_sid == call_sid)

    @guarded
    async def list_calls(
        self,
        *,
        statuses: Sequence[str] = (),
        since: datetime | None = None,
        before: tuple[datetime, str] | None = None,
        limit: int = 50,
    ) -> list[CallRecord]:
        """Most recent first; `before` is the (created_at, callbackId) of the last row seen."""
        query = self._select()
        if statuses:
            query = query.where(calls.c.status.in_(list(statuses)))
        if since is not None:
            query = query.where(calls.c.created_at >= since)
        if before is not None:
            at, callback_id = before
            query = query.where(
                or_(
                    calls.c.created_at < at,
                    and_(calls.c.created_at == at, calls.c.callback_id < callback_id),
                )
            )
        query = query.order_by(calls.c.created_at.desc(), calls.c.callback_id.desc()).limit(limit)
        async with self._connect() as conn:
            rows = (await conn.execute(query)).all()
        return [self._record(r) for r in rows]

    # -- creating --------------------------------------------------------------------

    @guarded
    async def create(self, record: CallRecord, admission: Admission | None = None) -> None:
        """Insert; raise DuplicateCall when the callbackId exists, unless its last dial
        attempt failed, in which case this attempt takes the record over atomically.

        With an admission the new call is checked in the same transaction, after the
        duplicate check and with the number locked (an advisory lock on PostgreSQL; SQLite's
        BEGIN IMMEDIATE serializes every writer), so a racing listing or a racing call to
        the same number is either fully before or fully after this one."""
        now = self.clock()
        values = record_values(record)
        async with self._begin() as conn:
            if admission is not None:
                await _lock_number(conn, record.to)
                refusal = await self._admit(conn, record, admission)
                if refusal is not None:
                    raise refusal
            insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
            stmt = (
                insert(calls)
                .values(**values, updated_at=now, dial_attempts=1)
                .on_conflict_do_nothing(index_elements=[calls.c.callback_id])
            )
            if (await conn.execute(stmt)).rowcount == 1:
                return
            takeover = (
                update(calls)
                .where(calls.c.callback_id == record.callback_id, calls.c.status == "dial-failed")
                .values(**values, updated_at=now, dial_attempts=calls.c.dial_attempts + 1)
            )
            if (await conn.execute(takeover)).rowcount == 1:
                return
            row = (
                await conn.execute(self._select().where(calls.c.callback_id == record.callback_id))
            ).one()
            existing = self._record(row)
        raise DuplicateCall(existing)

    async def _admit(
        self, conn: AsyncConnection, record: CallRecord, admission: Admission
    ) -> CallRefused | None:
        """The refusal of a new call, if any; None also for a live duplicate (it is answered
        as one after the insert finds it). Two statements: each one holds the write lock
        for another round trip."""
        existing = select(calls.c.status).where(calls.c.callback_id == record.callback_id)
        listed = select(do_not_call.c.number).where(do_not_call.c.number == record.to).exists()
        status, is_listed = (await conn.execute(select(existing.scalar_subquery(), listed))).one()
        if status is not None and status != "dial-failed":
            return None
        dialed: list[datetime] = []
        if admission.max_calls > 0 and not is_listed and admission.hours is None:
            # The newest `max_calls` calls in the window decide whether the cap is reached.
            query = (
                select(calls.c.created_at)
                .where(
                    calls.c.to_number == record.to,
                    calls.c.created_at > record.created_at - admission.window,
                    calls.c.status != "dial-failed",
                    calls.c.callback_id != record.callback_id,
                )
                .order_by(calls.c.created_at.desc())
                .limit(admission.max_calls)
            )
            dialed = list((await conn.execute(query)).scalars())
        return admit(admission, listed=bool(is_listed), dialed=dialed, now=record.created_at)

    # -- do-not-call list --------------------------------------------------------------

    @guarded
    async def dnc_add(self, entry: DncEntry) -> tuple[DncEntry, bool]:
        async with self._begin() as conn:
            await _lock_number(conn, entry.number)
            query = select(do_not_call).where(do_not_call.c.number == entry.number)
            row = (await conn.execute(query.with_for_update())).first()
            existing = dnc_from_row(row._mapping) if row is not None else None
            kept = merged_listing(existing, entry)
            if existing is None:
                await conn.execute(do_not_call.insert().values(**dnc_values(kept)))
            elif kept != existing:
                await conn.execute(
                    update(do_not_call)
                    .where(do_not_call.c.number == entry.number)
                    .values(reason=kept.reason)
                )
        return kept, existing is None

    @guarded
    async def dnc_get(self, number: str) -> DncEntry | None:
        async with self._connect() as conn:
            query = select(do_not_call).where(do_not_call.c.number == number)
            row = (await conn.execute(query)).first()
        return dnc_from_row(row._mapping) if row is not None else None

    @guarded
    async def dnc_remove(self, number: str) -> bool:
        async with self._begin() as conn:
            await _lock_number(conn, number)
            result = await conn.execute(delete(do_not_call).where(do_not_call.c.number == number))
        return bool(result.rowcount)

    @guarded
    async def dnc_list(self, *, after: str | None = None, limit: int = 100) -> list[DncEntry]:
        query = select(do_not_call).order_by(do_not_call.c.number).limit(limit)
        if after is not None:
            query = query.where(do_not_call.c.number > after)
        async with self._connect() as conn:
            rows = (await conn.execute(query)).all()
        return [dnc_from_row(r._mapping) for r in rows]

    # -- changing --------------------------------------------------------------------

    async def _locked(self, conn: AsyncConnection, where: ColumnElement[bool]) -> CallRecord | None:
        query = select(calls).where(where).with_for_update()
        row = (await conn.execute(query)).first()
        return record_from_row(row._mapping) if row is not None else None

    async def _write(self, conn: AsyncConnection, record: CallRecord) -> None:
        values = record_values(record)
        del values["callback_id"], values["created_at"]
        await conn.execute(
            update(calls)
            .where(calls.c.callback_id == record.callback_id)
            .values(**values, updated_at=self.clock())
        )

    async def _change(
        self, where: ColumnElement[bool], change: Callable[[CallRecord], bool]
    ) -> CallRecord | None:
        async with self._begin() as conn:
            record = await self._locked(conn, where)
            if record is not None and change(record):
                await self._write(conn, record)
        return record

    @guarded
    async def dialed(self, callback_id: str, call_sid: str, status: str) -> CallRecord | None:
        return await self._change(
            calls.c.callback_id == callback_id,
            lambda r: mutations.apply_dialed(r, call_sid, status),
        )

    @guarded
    async def dial_failed(self, callback_id: str, error: dict[str, Any]) -> None:
        now = self.clock()
        await self._change(
            calls.c.callback_id == callback_id,
            lambda r: mutations.apply_dial_failed(r, error, now),
        )

    async def _change_callback(
        self, call_sid: str, callback_id: str | None, change: Callable[[CallRecord], bool]
    ) -> CallRecord | None:
        """Apply a Twilio callback to its call in one transaction. The callbackId of our own
        callback URL is authoritative: the callback attaches its CallSid when we have not
        stored one yet (Twilio can call back before the create request returns), so no
        interleaving with `dialed()` can make it miss. Without a callbackId, or when that
        call carries another CallSid, the CallSid alone decides."""
        if not call_sid:
            return None
        async with self._begin() as conn:
            record = None
            if callback_id:
                record = await self._locked(conn, calls.c.callback_id == callback_id)
                if record is not None and not mutations.owns_sid(record, call_sid):
                    record = None
            if record is None:
                record = await self._locked(conn, calls.c.call_sid == call_sid)
            if record is None:
                return None
            attached = mutations.attach_sid(record, call_sid)
            if change(record) or attached:
                await self._write(conn, record)
        return record

    @guarded
    async def add_status(
        self, call_sid: str, event: StatusEvent, callback_id: str | None = None
    ) -> CallRecord | None:
        now = self.clock()
        return await self._change_callback(
            call_sid, callback_id, lambda r: mutations.apply_status(r, event, now)
        )

    @guarded
    async def set_answered_by(
        self, call_sid: str, answered_by: str, callback_id: str | None = None
    ) -> CallRecord | None:
        return await self._change_callback(
            call_sid, callback_id, lambda r: mutations.apply_answered_by(r, answered_by)
        )

    @guarded
    async def stream_started(self, callback_id: str, stream_sid: str) -> CallRecord | None:
        now = self.clock()
        return await self._change(
            calls.c.callback_id == callback_id,
            lambda r: mutations.apply_stream_started(r, stream_sid, now),
        )

    @guarded
    async def stream_stopped(self, callback_id: str) -> None:
        now = self.clock()
        await self._change(
            calls.c.callback_id == callback_id,
            lambda r: mutations.apply_stream_stopped(r, now),
        )

    async def set_transfer(self, callback_id: str, transfer: Transfer) -> None:
        def change(record: CallRecord) -> bool:
            record.transfer = transfer
            return True

        await self._change(calls.c.callback_id == callback_id, change)

    # -- results ---------------------------------------------------------------------

    @guarded
    async def save_result(
        self,
        result: CallResult,
        *,
        source: ResultSource = "bridge",
        default_url: str | None = None,
    ) -> bool:
        """Keep the call's result and queue its delivery in the same transaction.

        True when this result became the call's result (see results.rules); the delivery
        goes to the call's own resultWebhookUrl, else `default_url`, else nowhere.
        """
        now = self.clock()
        async with self._begin() as conn:
            record = await self._locked(conn, calls.c.callback_id == result.callbackId)
            if record is None:
                logger.bind(callbackId=result.callbackId).warning("result for an unknown call")
                return False
            query = select(deliveries).where(deliveries.c.callback_id == result.callbackId)
            delivery = (await conn.execute(query.with_for_update())).first()
            started = delivery is not None and (
                delivery.attempts > 0 or delivery.lease_owner is not None
            )
            if not takes_result(record.result_source, started, source):
                logger.bind(callbackId=result.callbackId).warning(
                    "a {} result arrived after the {} result was kept; dropped",
                    source,
                    record.result_source,
                )
                return False
            record.result = result
            record.result_source = source
            await self._write(conn, record)
            payload = encode_result(result)
            url = record.result_webhook_url or default_url
            if delivery is not None:
                await conn.execute(
                    update(deliveries)
                    .where(deliveries.c.callback_id == result.callbackId)
                    .values(payload=payload)
                )
            elif url:
                await conn.execute(
                    deliveries.insert().values(
                        callback_id=result.callbackId,
                        url=url,
                        payload=payload,
                        state="pending",
                        attempts=0,
                        enqueued_at=now,
                        next_attempt_at=now,
                    )
                )
        return True
