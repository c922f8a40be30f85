"""A SQLite file that is locked by another process: clear 503s and log lines, no crash,
and what could not be stored is stored when the lock is gone."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import exc as sa

from caller_engine.calls import sql_engine
from caller_engine.calls.availability import is_unavailable
from tests.conftest import Api


def test_what_counts_as_an_unavailable_database() -> None:
    class Orig(Exception):
        sqlstate = "57P03"  # the database system is starting up

    assert is_unavailable(ConnectionRefusedError(111, "refused"))
    assert is_unavailable(sa.OperationalError("SELECT 1", {}, Exception("database is locked")))
    assert is_unavailable(sqlite3.OperationalError("database is locked"))
    assert is_unavailable(sa.DBAPIError("SELECT 1", {}, Orig("starting up")))
    assert not is_unavailable(sa.IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not is_unavailable(ValueError("a bug"))


async def test_a_locked_sqlite_file_answers_503_then_catches_up(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql_engine, "SQLITE_BUSY_TIMEOUT_MS", 100)
    body = await (await api.initiate({"callbackId": "cb-lock", "to": "+15551234567"})).json()
    sid = body["callSid"]
    await api.services.store.close()  # new connections take the short busy timeout
    other = sqlite3.connect(tmp_path / "calls.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process holds the file
    try:
        params = {"CallSid": sid, "CallStatus": "ringing", "SequenceNumber": "1"}
        resp = await api.twilio_post("/webhooks/call-status?callbackId=cb-lock", params)
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "database_unavailable"
        busy = await api.initiate({"callbackId": "cb-locked", "to": "+15551234567"})
        assert busy.status == 503
        assert (await api.session.get(api.url("/health"))).status == 200
    finally:
        other.execute("ROLLBACK")
        other.close()
    async with asyncio.timeout(10):
        while (record := await api.services.store.get("cb-lock")) is None or not [
            e for e in record.status_history if e.status == "ringing"
        ]:
            await asyncio.sleep(0.05)
    assert record.status == "ringing"
    assert await api.services.store.get("cb-locked") is None
