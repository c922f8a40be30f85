"""The current shape of the call tables, used by every query (migrations.py creates them).

Times are stored in UTC: timestamptz on PostgreSQL, fixed-format text on SQLite (which
therefore sorts and compares correctly), and always read back timezone-aware.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB


class UtcDateTime(TypeDecorator[datetime]):
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def Json() -> Any:
    return JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


metadata = MetaData()

calls = Table(
    "calls",
    metadata,
    Column("callback_id", String(128), primary_key=True),
    Column("call_sid", String(64), nullable=True),
    Column("to_number", String(32), nullable=False),
    Column("record", Boolean, nullable=False),
    Column("agent", Json(), nullable=False),
    Column("result_webhook_url", Text, nullable=True),
    Column("status", String(32), nullable=False),
    Column("status_history", Json(), nullable=False),
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
    Column("error", Json(), nullable=True),
    Column("result", Json(), nullable=True),
    Column("result_source", String(16), nullable=True),
    Column("dial_attempts", Integer, nullable=False),
    Column("transfer", Json(), nullable=True),
    Column("callee_timezone", String(64), nullable=True),
    Column("ignore_calling_hours", Boolean, nullable=False, server_default=false()),
    Index("ix_calls_call_sid", "call_sid", unique=True),
    Index("ix_calls_created_at", "created_at", "callback_id"),
    Index("ix_calls_status", "status"),
    Index("ix_calls_to_number_created_at", "to_number", "created_at"),
)

do_not_call = Table(
    "do_not_call",
    metadata,
    Column("number", String(32), primary_key=True),
    Column("source", String(16), nullable=False),
    Column("reason", Text, nullable=True),
    Column("callback_id", String(128), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
)

deliveries = Table(
    "deliveries",
    metadata,
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
