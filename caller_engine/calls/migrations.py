"""Versioned schema migrations, applied at start and by `caller-engine db upgrade`.

`schema_version` holds one row per applied migration. MIGRATIONS is an ordered list of
functions, each taking the database from version n-1 to n inside one transaction (DDL is
transactional on both PostgreSQL and SQLite). Several instances starting at once are
serialized by an advisory lock on PostgreSQL and by BEGIN IMMEDIATE on SQLite.

Each migration describes the tables as they were at its version, so later changes to
schema.py never alter what an old migration does; a test checks that the migrated database
matches schema.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from loguru import logger
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from caller_engine.calls.schema import UtcDateTime
from caller_engine.calls.sql_engine import Database


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


_versions = MetaData()
schema_version = Table(
    "schema_version",
    _versions,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", String(200), nullable=False),
    Column("applied_at", UtcDateTime, nullable=False),
)


def _v1_calls_and_deliveries(conn: Connection) -> None:
    def json() -> JSON:
        return JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

    meta = MetaData()
    Table(
        "calls",
        meta,
        Column("callback_id", String(128), primary_key=True),
        Column("call_sid", String(64), nullable=True),
        Column("to_number", String(32), nullable=False),
        Column("record", Boolean, nullable=False),
        Column("agent", json(), nullable=False),
        Column("result_webhook_url", Text, nullable=True),
        Column("status", String(32), nullable=False),
        Column("status_history", json(), nullable=False),
        Column("answered_by", String(32), nullable=True),
        Column("created_at", UtcDateTime, nullable=False),
        Column("updated_at", UtcDateTime, nullable=False),
        Column("answered_at", UtcDateTime, nullable=True),
        Column("stream_started_at", UtcDateTime, nullable=True),
        Column("stream_stopped_at", UtcDateTime, nullable=True),
        Column("ended_at", UtcDateTime, nullable=True),
        Column("duration", Integer, nullable=True),
        Column("recording_url", Text, nullable=True),
        Column("recording_sid", String(64), nullable=True),
        Column("stream_sid", String(64), nullable=True),
        Column("error", json(), nullable=True),
        Column("result", json(), nullable=True),
        Column("result_source", String(16), nullable=True),
        Column("dial_attempts", Integer, nullable=False),
        Index("ix_calls_call_sid", "call_sid", unique=True),
        Index("ix_calls_created_at", "created_at", "callback_id"),
        Index("ix_calls_status", "status"),
    )
    Table(
        "deliveries",
        meta,
        Column(
            "callback_id",
            String(128),
            ForeignKey("calls.callback_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        Column("url", Text, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("state", String(16), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("enqueued_at", UtcDateTime, nullable=False),
        Column("next_attempt_at", UtcDateTime, nullable=True),
        Column("last_attempt_at", UtcDateTime, nullable=True),
        Column("delivered_at", UtcDateTime, nullable=True),
        Column("lease_owner", String(64), nullable=True),
        Column("lease_until", UtcDateTime, nullable=True),
        Column("last_status", Integer, nullable=True),
        Column("last_error", Text, nullable=True),
        Index("ix_deliveries_due", "state", "next_attempt_at"),
    )
    meta.create_all(conn)


def _v2_call_transfer(conn: Connection) -> None:
    """The call's hand-off to a person (transfer_call), as a JSON column."""
    kind = "JSONB" if conn.dialect.name == "postgresql" else "JSON"
    conn.execute(text(f"ALTER TABLE calls ADD COLUMN transfer {kind}"))


def _v3_dialing_guardrails(conn: Connection) -> None:
    """The do-not-call list; per-call calling-hours facts; calls by number and time for the
    frequency cap. Self-contained: it depends only on the `calls` table of version 1."""
    meta = MetaData()
    Table(
        "do_not_call",
        meta,
        Column("number", String(32), primary_key=True),
        Column("source", String(16), nullable=False),
        Column("reason", Text, nullable=True),
        Column("callback_id", String(128), nullable=True),
        Column("created_at", UtcDateTime, nullable=False),
    )
    meta.create_all(conn)
    preparer = conn.dialect.identifier_preparer
    boolean = Boolean().compile(dialect=conn.dialect)
    varchar = String(64).compile(dialect=conn.dialect)
    false_ = "false" if conn.dialect.name == "postgresql" else "0"
    table = preparer.quote("calls")
    conn.execute(text(f"ALTER TABLE {table} ADD COLUMN callee_timezone {varchar}"))
    conn.execute(
        text(
            f"ALTER TABLE {table} ADD COLUMN ignore_calling_hours {boolean} "
            f"NOT NULL DEFAULT {false_}"
        )
    )
    conn.execute(
        text(f"CREATE INDEX ix_calls_to_number_created_at ON {table} (to_number, created_at)")
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "call records and the result outbox", _v1_calls_and_deliveries),
    Migration(2, "the hand-off of a call to a person", _v2_call_transfer),
    Migration(
        3, "dialing guardrails: do-not-call list, calling-hours facts", _v3_dialing_guardrails
    ),
)
LATEST = MIGRATIONS[-1].version


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(
            text(
                "SELECT pg_advisory_xact_lock("
                "hashtext('caller_engine.migrations:' || current_schema()))"
            )
        )


def _current(conn: Connection) -> int:
    if not inspect(conn).has_table("schema_version"):
        return 0
    return int(
        conn.execute(select(func.coalesce(func.max(schema_version.c.version), 0))).scalar_one()
    )


def _upgrade(conn: Connection) -> tuple[int, list[int]]:
    _lock(conn)
    schema_version.create(conn, checkfirst=True)
    current = _current(conn)
    applied: list[int] = []
    for migration in MIGRATIONS:
        if migration.version <= current:
            continue
        migration.apply(conn)
        conn.execute(
            insert(schema_version).values(
                version=migration.version,
                description=migration.description,
                applied_at=datetime.now(UTC),
            )
        )
        applied.append(migration.version)
    return max(current, LATEST), applied


async def upgrade(db: Database) -> int:
    """Apply every pending migration; the resulting version."""
    version, applied = await db.write(_upgrade)
    if applied:
        logger.info("database schema upgraded to version {} (applied {})", version, applied)
    if version > LATEST:
        logger.warning(
            "database schema version {} is newer than this release knows ({})", version, LATEST
        )
    return version


async def current_version(db: Database) -> int:
    return await db.read(_current)
