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
import functools
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from loguru import logger
from sqlalchemy import (
    Select,
    and_,
    bindparam,
    delete,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import Update

from caller_engine.calls import mutations
from caller_engine.calls.availability import guarded
from caller_engine.calls.gate import STORE_CONCURRENCY, PriorityGate
from caller_engine.calls.migrations import upgrade
from caller_engine.calls.models import CallRecord, DncEntry, StatusEvent, utcnow
from caller_engine.calls.result import CallResult
from caller_engine.calls.schema import calls, deliveries, do_not_call
from caller_engine.calls.sql_engine import Database, Operation, open_database
from caller_engine.calls.sql_prepared import execute, fetch_one
from caller_engine.calls.sql_rows import (
    delivery_from_row,
    dnc_from_row,
    dnc_values,
    record_from_row,
    record_values,
)
from caller_engine.calls.store import DuplicateCall, Saved, merged_listing
from caller_engine.calls.transfer import Transfer
from caller_engine.failures import describe
from caller_engine.guardrails.policy import Admission, CallRefused, admit
from caller_engine.results.build import complete_from_record
from caller_engine.results.payload import encode_result
from caller_engine.results.rules import ResultSource, takes_result
from caller_engine.results.sql_outbox import SqlOutbox

Clock = Callable[[], datetime]
T = TypeVar("T")
PING_TIMEOUT = 2.0


def _lock_number(conn: Connection, number: str) -> None:
    """Serialize, until the transaction ends, everything that admits or lists one number.
    PostgreSQL only: on SQLite every write transaction is already exclusive."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtext('caller_engine.number:' || :number))"),
            {"number": number},
        )


# A call with its delivery, if any: built once, narrowed per query.
_WITH_DELIVERY = select(calls, *[c.label("d_" + c.name) for c in deliveries.c]).select_from(
    calls.outerjoin(deliveries, deliveries.c.callback_id == calls.c.callback_id)
)
_GET_BY_ID = _WITH_DELIVERY.where(calls.c.callback_id == bindparam("key"))
_GET_BY_SID = _WITH_DELIVERY.where(calls.c.call_sid == bindparam("key"))
_LOCK_BY_ID = select(calls).where(calls.c.callback_id == bindparam("key")).with_for_update()
_LOCK_BY_SID = select(calls).where(calls.c.call_sid == bindparam("key")).with_for_update()

# The columns a change can write back (the key, creation time and dial count never change).
_UPDATABLE = [
    c.name
    for c in calls.c
    if c.name not in ("callback_id", "created_at", "dial_attempts", "updated_at")
]


@functools.cache
def _update(columns: tuple[str, ...]) -> Update:
    """UPDATE of `columns` and updated_at, values bound per execution: built once per set."""
    names = (*columns, "updated_at")
    return (
        update(calls)
        .where(calls.c.callback_id == bindparam("key"))
        .values({name: bindparam("v_" + name) for name in names})
    )


# What every call's start and end write, with parameters bound per execution (sql_prepared).
_INSERT = {
    "sqlite": sqlite_insert(calls)
    .values({c.name: bindparam(c.name) for c in calls.c})
    .on_conflict_do_nothing(index_elements=[calls.c.callback_id]),
    "postgresql": pg_insert(calls)
    .values({c.name: bindparam(c.name) for c in calls.c})
    .on_conflict_do_nothing(index_elements=[calls.c.callback_id]),
}
_LOCK_DELIVERY = (
    select(deliveries).where(deliveries.c.callback_id == bindparam("key")).with_for_update()
)
_SET_PAYLOAD = (
    update(deliveries)
    .where(deliveries.c.callback_id == bindparam("key"))
    .values(payload=bindparam("payload"))
)
_QUEUE_DELIVERY = deliveries.insert().values({c.name: bindparam(c.name) for c in deliveries.c})


def _locked(conn: Connection, query: Select[Any], key: str) -> Locked | None:
    row = fetch_one(conn, query, {"key": key})
    return Locked(record_from_row(row), row) if row is not None else None


class Locked(NamedTuple):
    """A record read under its row lock, and the row as stored (what `_write` compares)."""

    record: CallRecord
    row: Mapping[str, Any]


class SqlCallStore:
    def __init__(self, db: Database, *, clock: Clock = utcnow) -> None:
        self.db = db
        self.clock = clock
        self.gate = PriorityGate(STORE_CONCURRENCY)
        self.outbox = SqlOutbox(db, clock=clock, gate=self.gate)

    async def _read(self, operation: Operation[T]) -> T:
        """A read, once the gate lets this operation in (see calls.gate)."""
        async with self.gate.slot():
            return await self.db.read(operation)

    async def _transact(self, operation: Operation[T]) -> T:
        """A write transaction, once the gate lets this operation in (see calls.gate)."""
        async with self.gate.slot():
            return await self.db.write(operation)

    @classmethod
    async def open(
        cls, url: str, *, schema: str | None = None, clock: Clock = utcnow
    ) -> SqlCallStore:
        """Connect and bring the schema up to date."""
        db = open_database(url, schema=schema)
        try:
            await db.prepare()
            await upgrade(db)
        except BaseException:
            await db.dispose()
            raise
        return cls(db, clock=clock)

    async def close(self) -> None:
        await self.db.dispose()

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(PING_TIMEOUT):
                await self.db.read(lambda conn: conn.execute(text("SELECT 1")).scalar())
        except Exception as exc:
            logger.warning("database ping failed: {}", describe(exc))
            return False
        return True

    # -- reading ---------------------------------------------------------------------

    def _record(self, mapping: Mapping[Any, Any]) -> CallRecord:
        delivery = None
        if mapping["d_callback_id"] is not None:
            d_row = {c.name: mapping["d_" + c.name] for c in deliveries.c}
            delivery = delivery_from_row(d_row, self.clock())
        return record_from_row(mapping, delivery)

    def _one(self, conn: Connection, query: Select[Any], key: str) -> CallRecord | None:
        row = fetch_one(conn, query, {"key": key})
        return self._record(row) if row is not None else None

    @guarded
    async def get(self, callback_id: str) -> CallRecord | None:
        return await self._read(lambda conn: self._one(conn, _GET_BY_ID, callback_id))

    @guarded
    async def find_by_sid(self, call_sid: str) -> CallRecord | None:
        if not call_sid:
            return None
        return await self._read(lambda conn: self._one(conn, _GET_BY_SID, call_sid))

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
        query = _WITH_DELIVERY
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
        return await self._read(
            lambda conn: [self._record(r._mapping) for r in conn.execute(query)]
        )

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

        def insert(conn: Connection) -> CallRecord | CallRefused | None:
            if admission is not None:
                _lock_number(conn, record.to)
                refusal = self._admit(conn, record, admission)
                if refusal is not None:
                    return refusal
            row = {**values, "updated_at": now, "dial_attempts": 1}
            if execute(conn, _INSERT[conn.dialect.name], row) == 1:
                return None
            takeover = (
                update(calls)
                .where(calls.c.callback_id == record.callback_id, calls.c.status == "dial-failed")
                .values(**values, updated_at=now, dial_attempts=calls.c.dial_attempts + 1)
            )
            if conn.execute(takeover).rowcount == 1:
                return None
            return self._one(conn, _GET_BY_ID, record.callback_id)

        outcome = await self._transact(insert)
        if isinstance(outcome, CallRefused):
            raise outcome
        if outcome is not None:
            raise DuplicateCall(outcome)

    def _admit(
        self, conn: Connection, record: CallRecord, admission: Admission
    ) -> CallRefused | None:
        """The refusal of a new call, if any; None also for a live duplicate (it is answered
        as one after the insert finds it)."""
        existing = select(calls.c.status).where(calls.c.callback_id == record.callback_id)
        listed = select(do_not_call.c.number).where(do_not_call.c.number == record.to).exists()
        status, is_listed = conn.execute(select(existing.scalar_subquery(), listed)).one()
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
            dialed = list(conn.execute(query).scalars())
        return admit(admission, listed=bool(is_listed), dialed=dialed, now=record.created_at)

    # -- do-not-call list --------------------------------------------------------------

    @guarded
    async def dnc_add(self, entry: DncEntry) -> tuple[DncEntry, bool]:
        def add(conn: Connection) -> tuple[DncEntry, bool]:
            _lock_number(conn, entry.number)
            query = select(do_not_call).where(do_not_call.c.number == entry.number)
            row = conn.execute(query.with_for_update()).first()
            existing = dnc_from_row(row._mapping) if row is not None else None
            kept = merged_listing(existing, entry)
            if existing is None:
                conn.execute(do_not_call.insert().values(**dnc_values(kept)))
            elif kept != existing:
                conn.execute(
                    update(do_not_call)
                    .where(do_not_call.c.number == entry.number)
                    .values(reason=kept.reason)
                )
            return kept, existing is None

        return await self._transact(add)

    @guarded
    async def dnc_get(self, number: str) -> DncEntry | None:
        query = select(do_not_call).where(do_not_call.c.number == number)

        def get(conn: Connection) -> DncEntry | None:
            row = conn.execute(query).first()
            return dnc_from_row(row._mapping) if row is not None else None

        return await self._read(get)

    @guarded
    async def dnc_remove(self, number: str) -> bool:
        def remove(conn: Connection) -> bool:
            _lock_number(conn, number)
            result = conn.execute(delete(do_not_call).where(do_not_call.c.number == number))
            return bool(result.rowcount)

        return await self._transact(remove)

    @guarded
    async def dnc_list(self, *, after: str | None = None, limit: int = 100) -> list[DncEntry]:
        query = select(do_not_call).order_by(do_not_call.c.number).limit(limit)
        if after is not None:
            query = query.where(do_not_call.c.number > after)
        return await self._read(
            lambda conn: [dnc_from_row(r._mapping) for r in conn.execute(query)]
        )

    # -- changing --------------------------------------------------------------------

    def _write(self, conn: Connection, locked: Locked) -> None:
        """Write back the columns whose value now differs from the stored row."""
        record, stored = locked
        values = record_values(record)
        columns = tuple(name for name in _UPDATABLE if values[name] != stored[name])
        params = {"v_" + name: values[name] for name in columns}
        params["v_updated_at"] = self.clock()
        params["key"] = record.callback_id
        execute(conn, _update(columns), params)

    async def _change(
        self, callback_id: str, change: Callable[[CallRecord], bool]
    ) -> CallRecord | None:
        def apply(conn: Connection) -> CallRecord | None:
            locked = _locked(conn, _LOCK_BY_ID, callback_id)
            if locked is None:
                return None
            if change(locked.record):
                self._write(conn, locked)
            return locked.record

        return await self._transact(apply)

    @guarded
    async def dialed(self, callback_id: str, call_sid: str, status: str) -> CallRecord | None:
        return await self._change(
            callback_id, lambda r: mutations.apply_dialed(r, call_sid, status)
        )

    @guarded
    async def dial_failed(self, callback_id: str, error: dict[str, Any]) -> None:
        now = self.clock()
        await self._change(callback_id, lambda r: mutations.apply_dial_failed(r, error, now))

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

        def apply(conn: Connection) -> CallRecord | None:
            locked = None
            if callback_id:
                locked = _locked(conn, _LOCK_BY_ID, callback_id)
                if locked is not None and not mutations.owns_sid(locked.record, call_sid):
                    locked = None
            if locked is None:
                locked = _locked(conn, _LOCK_BY_SID, call_sid)
            if locked is None:
                return None
            record = locked.record
            attached = mutations.attach_sid(record, call_sid)
            if change(record) or attached:
                self._write(conn, locked)
            return record

        return await self._transact(apply)

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
            callback_id, lambda r: mutations.apply_stream_started(r, stream_sid, now)
        )

    @guarded
    async def stream_stopped(self, callback_id: str) -> None:
        now = self.clock()
        await self._change(callback_id, lambda r: mutations.apply_stream_stopped(r, now))

    async def set_transfer(self, callback_id: str, transfer: Transfer) -> None:
        def change(record: CallRecord) -> bool:
            record.transfer = transfer
            return True

        await self._change(callback_id, change)

    # -- results ---------------------------------------------------------------------

    @guarded
    async def save_result(
        self,
        result: CallResult,
        *,
        source: ResultSource = "bridge",
        default_url: str | None = None,
    ) -> Saved:
        """Keep the call's result and queue its delivery in the same transaction.

        The result is completed from the record as it is stored (results.build); whether
        it became the call's result follows results.rules; the delivery goes to the call's
        own resultWebhookUrl, else `default_url`, else nowhere.
        """
        now = self.clock()
        log = logger.bind(callbackId=result.callbackId)

        def save(conn: Connection) -> Saved:
            locked = _locked(conn, _LOCK_BY_ID, result.callbackId)
            if locked is None:
                log.warning("result for an unknown call")
                return Saved.DROPPED
            record = locked.record
            delivery = fetch_one(conn, _LOCK_DELIVERY, {"key": result.callbackId})
            started = delivery is not None and (
                delivery["attempts"] > 0 or delivery["lease_owner"] is not None
            )
            if not takes_result(record.result_source, started, source):
                log.warning(
                    "a {} result arrived after the {} result was kept; dropped",
                    source,
                    record.result_source,
                )
                return Saved.DROPPED
            complete_from_record(result, record)
            record.result = result
            record.result_source = source
            self._write(conn, locked)
            url = record.result_webhook_url or default_url
            if delivery is not None:
                payload = encode_result(result)
                execute(conn, _SET_PAYLOAD, {"key": result.callbackId, "payload": payload})
                return Saved.QUEUED
            if not url:
                return Saved.KEPT
            queued = dict.fromkeys(deliveries.c.keys()) | {
                "callback_id": result.callbackId,
                "url": url,
                "payload": encode_result(result),
                "state": "pending",
                "attempts": 0,
                "enqueued_at": now,
                "next_attempt_at": now,
            }
            execute(conn, _QUEUE_DELIVERY, queued)
            return Saved.QUEUED

        return await self._transact(save)
