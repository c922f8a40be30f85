"""Pure parts of result delivery: retry policy, signatures, the one-result rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from caller_engine.calls.models import AgentOverrides, CallRecord, StatusEvent
from caller_engine.results.build import result_from_record
from caller_engine.results.policy import (
    RetryPolicy,
    backoff_delay,
    classify,
    next_attempt,
    retry_after,
)
from caller_engine.results.rules import takes_result
from caller_engine.results.sender import headers_for
from caller_engine.results.signing import compute_v1, parse_header, signature_header, verify

NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, "delivered"),
        (204, "delivered"),
        (None, "retry"),
        (500, "retry"),
        (503, "retry"),
        (429, "retry"),
        (400, "reject"),
        (401, "reject"),
        (404, "reject"),
        (408, "reject"),
        (301, "reject"),
    ],
)
def test_classify(status: int | None, verdict: str) -> None:
    assert classify(status) == verdict


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(backoff_base=2, backoff_cap=60)
    assert [backoff_delay(n, policy, lambda: 0.0) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert [backoff_delay(n, policy, lambda: 1.0) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert backoff_delay(30, policy, lambda: 1.0) == 60
    assert backoff_delay(30, policy, lambda: 0.0) == 30


def test_retry_after_seconds_or_date_capped() -> None:
    assert retry_after(None, NOW, 600) is None
    assert retry_after("120", NOW, 600) == 120
    assert retry_after("9999", NOW, 600) == 600
    assert retry_after("Tue, 01 Jan 2030 00:00:30 GMT", NOW, 600) == 30
    assert retry_after("Mon, 31 Dec 2029 00:00:00 GMT", NOW, 600) == 0
    assert retry_after("soon", NOW, 600) is None


def test_next_attempt_respects_retry_after_and_the_period() -> None:
    policy = RetryPolicy(backoff_base=2, backoff_cap=60, retry_period=100)
    start = NOW
    assert next_attempt(1, NOW, start, policy, rand=lambda: 0.0) == NOW + timedelta(seconds=1)
    later = next_attempt(1, NOW, start, policy, retry_after_s=30, rand=lambda: 0.0)
    assert later == NOW + timedelta(seconds=30)
    near_end = NOW + timedelta(seconds=99)
    assert next_attempt(9, near_end, start, policy) == start + timedelta(seconds=100)
    assert next_attempt(9, start + timedelta(seconds=100), start, policy) is None


def test_signature_round_trip_and_tampering() -> None:
    body = b'{"callbackId":"cb-1"}'
    header = signature_header("s3cret", 1_900_000_000, body)
    assert header == f"t=1900000000,v1={compute_v1('s3cret', 1_900_000_000, body)}"
    assert parse_header(header)[0] == 1_900_000_000
    assert verify("s3cret", header, body, now=1_900_000_010)
    assert not verify("s3cret", header, body + b"x", now=1_900_000_010)
    assert not verify("other", header, body, now=1_900_000_010)
    assert not verify("s3cret", header, body, now=1_900_000_400)
    assert not verify("s3cret", None, body, now=1_900_000_010)
    assert not verify("s3cret", "t=abc,v1=00", body, now=1_900_000_010)
    rotated = f"t=1900000000,v1=deadbeef,v1={compute_v1('s3cret', 1_900_000_000, body)}"
    assert verify("s3cret", rotated, body, now=1_900_000_000)


def test_headers_carry_the_idempotency_key_and_optional_signature() -> None:
    signed = headers_for("cb-9", b"{}", "k", now=1_900_000_000.7)
    assert signed["Idempotency-Key"] == "cb-9"
    assert signed["Caller-Engine-Signature"].startswith("t=1900000000,v1=")
    assert signed["Content-Type"] == "application/json"
    assert "Caller-Engine-Signature" not in headers_for("cb-9", b"{}", None, now=0)


def test_one_result_rule() -> None:
    assert takes_result(None, False, "record") and takes_result(None, False, "bridge")
    assert takes_result("record", False, "bridge")
    assert not takes_result("record", True, "bridge")
    assert not takes_result("bridge", False, "bridge")
    assert not takes_result("bridge", False, "record")
    assert not takes_result("record", False, "record")


def _ended(status: str, answered_by: str | None = None) -> CallRecord:
    record = CallRecord("cb", "+15551234567", False, AgentOverrides(metadata={"k": 1}))
    record.call_sid = "CA1"
    record.status = status
    record.answered_by = answered_by
    record.status_history = [StatusEvent(status, 2, "t", {"SipResponseCode": "486"})]
    record.ended_at = NOW
    return record


def test_result_from_record() -> None:
    busy = result_from_record(_ended("busy"), voicemail=False)
    assert busy is not None and busy.status == "busy" and busy.error is None
    assert busy.statusHistory == [
        {"status": "busy", "sequence": 2, "timestamp": "t", "SipResponseCode": "486"}
    ]
    assert busy.endedAt == "2030-01-01T00:00:00Z" and busy.metadata == {"k": 1}
    vm = result_from_record(_ended("completed", "machine_start"), voicemail=True)
    assert vm is not None and vm.status == "voicemail" and vm.error is None
    silent = result_from_record(_ended("completed"), voicemail=False)
    assert silent is not None and silent.error is not None
    assert silent.error["code"] == "no_stream"
    assert result_from_record(_ended("in-progress"), voicemail=False) is None
