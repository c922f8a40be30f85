"""DATABASE_URL handling, record views and the delivery settings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from caller_engine.calls.models import AgentOverrides, CallRecord
from caller_engine.calls.sql_engine import DatabaseUrlError, driver_url
from caller_engine.calls.views import decode_cursor, encode_cursor
from caller_engine.config import ConfigError
from tests.conftest import make_settings


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///./caller_engine.db", "sqlite+pysqlite:///./caller_engine.db"),
        ("sqlite:////var/lib/ce/calls.db", "sqlite+pysqlite:////var/lib/ce/calls.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+pysqlite:///x.db"),
        ("sqlite+pysqlite:///x.db", "sqlite+pysqlite:///x.db"),
        ("postgresql://u:p@db:5432/calls", "postgresql+asyncpg://u:***@db:5432/calls"),
        ("postgres://u@db/calls", "postgresql+asyncpg://u@db/calls"),
        ("postgresql+asyncpg://u@db/calls", "postgresql+asyncpg://u@db/calls"),
        ("postgresql://u@db/calls?sslmode=require", "postgresql+asyncpg://u@db/calls?ssl=require"),
    ],
)
def test_database_urls_get_their_drivers(given: str, expected: str) -> None:
    assert str(driver_url(given)) == expected


@pytest.mark.parametrize("bad", ["mysql://u@db/x", "postgresql+psycopg2://u@db/x", "nonsense"])
def test_unsupported_database_urls_are_refused(bad: str) -> None:
    with pytest.raises(DatabaseUrlError):
        driver_url(bad)


def test_cursor_round_trip_and_garbage() -> None:
    at = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    record = CallRecord("cb|odd", "+15551234567", False, AgentOverrides(), created_at=at)
    assert decode_cursor(encode_cursor(record)) == (at, "cb|odd")
    for garbage in ("", "%%%", "bm9wZQ", "MjAzMC0wMS0wMXxjYg"):  # "nope", naive time
        assert decode_cursor(garbage) is None


def test_delivery_settings_are_checked() -> None:
    settings = make_settings()
    assert settings.database_url.startswith("sqlite:///")
    assert settings.result_webhook_url is None and settings.delivery_retry_period == 86_400
    with pytest.raises(ConfigError) as err:
        make_settings(database_url="mysql://db/x", result_webhook_url="ftp://x", delivery_lease=5)
    text = str(err.value)
    assert "DATABASE_URL" in text and "RESULT_WEBHOOK_URL" in text and "DELIVERY_LEASE" in text
    with pytest.raises(ConfigError) as err:
        make_settings(environment="production", result_webhook_url="https://o.example/r")
    assert "RESULT_WEBHOOK_SECRET" in str(err.value)
    make_settings(
        environment="production",
        result_webhook_url="https://o.example/r",
        result_webhook_secret="s",
    )
