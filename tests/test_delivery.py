"""Results reach the orchestrator: signed, retried, deduplicated, across restarts."""

# ruff: noqa: F811  (pytest fixtures imported from tests.store_backends)

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from caller_engine.calls.models import CallRecord
from caller_engine.calls.result import CallResult
from caller_engine.sim.orchestrator import OrchestratorEmulator
from caller_engine.sim.server import LoopbackServer
from caller_engine.sim.twilio.rest import TwilioRestEmulator
from tests.conftest import Api
from tests.store_backends import (  # noqa: F401
    WEBHOOK_SECRET,
    Database,
    Instances,
    db,
    instances,
    orchestrator,
)

Orchestrator = tuple[OrchestratorEmulator, str]


# The verification recipe exactly as documented for receivers in the README.
def verify(secret: str, header: str, raw_body: bytes, tolerance: int = 300) -> bool:
    items = [part.strip().partition("=")[::2] for part in header.split(",")]
    t = next((v for k, v in items if k == "t"), "")
    signatures = [v for k, v in items if k == "v1"]
    if not t.isdigit() or abs(time.time() - int(t)) > tolerance:
        return False  # missing or stale timestamp: possibly a replay
    expected = hmac.new(secret.encode(), f"{t}.".encode() + raw_body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, s) for s in signatures)


async def dial(api: Api, callback_id: str, **body: Any) -> str:
    resp = await api.initiate({"callbackId": callback_id, "to": "+15551234567", **body})
    assert resp.status == 200, await resp.text()
    return str((await resp.json())["callSid"])


async def status(api: Api, callback_id: str, sid: str, value: str, seq: int, **extra: str) -> None:
    params = {"CallSid": sid, "AccountSid": "AC0", "CallStatus": value, "SequenceNumber": str(seq)}
    resp = await api.twilio_post(
        f"/webhooks/call-status?callbackId={callback_id}", {**params, **extra}
    )
    assert resp.status == 200


async def amd(api: Api, callback_id: str, sid: str, answered_by: str) -> None:
    params = {"CallSid": sid, "AccountSid": "AC0", "AnsweredBy": answered_by}
    resp = await api.twilio_post(f"/webhooks/amd?callbackId={callback_id}", params)
    assert resp.status == 200


async def record_when(api: Api, callback_id: str, check: Any, within: float = 5.0) -> CallRecord:
    async with asyncio.timeout(within):
        while True:
            record = await api.services.store.get(callback_id)
            if record is not None and check(record):
                return record
            await asyncio.sleep(0.02)


def delivered(record: CallRecord) -> bool:
    return record.delivery is not None and record.delivery.state == "delivered"


async def test_busy_call_delivers_one_signed_result(
    instances: Instances, orchestrator: Orchestrator
) -> None:
    receiver, url = orchestrator
    api = await instances.start(result_webhook_url=url)
    sid = await dial(api, "cb-busy")
    for value, seq in [("initiated", 0), ("ringing", 1), ("busy", 2)]:
        await status(
            api,
            "cb-busy",
            sid,
            value,
            seq,
            **({"SipResponseCode": "486"} if value == "busy" else {}),
        )
    result = await receiver.wait_for("cb-busy")
    assert result["status"] == "busy" and result["callSid"] == sid
    assert result["to"] == "+15551234567" and result["transcript"] == []
    assert [e["status"] for e in result["statusHistory"]] == ["initiated", "ringing", "busy"]
    assert result["statusHistory"][-1]["SipResponseCode"] == "486"
    [sent] = receiver.received
    assert sent.key == "cb-busy" and sent.signature is not None
    assert verify(WEBHOOK_SECRET, sent.signature, sent.body)
    assert not verify(WEBHOOK_SECRET, sent.signature, sent.body + b" ")
    assert not verify("another-secret", sent.signature, sent.body)
    record = await record_when(api, "cb-busy", delivered)
    assert record.delivery is not None and record.delivery.attempts == 1
    assert record.result is not None and record.result_source == "record"


def test_documented_recipe_rejects_stale_timestamps() -> None:
    body = b'{"callbackId":"x"}'
    old = int(time.time()) - 301
    mac = hmac.new(WEBHOOK_SECRET.encode(), f"{old}.".encode() + body, hashlib.sha256)
    assert not verify(WEBHOOK_SECRET, f"t={old},v1={mac.hexdigest()}", body)
    assert verify(WEBHOOK_SECRET, f"t={old},v1={mac.hexdigest()}", body, tolerance=400)
    assert not verify(WEBHOOK_SECRET, "v1=abc", body)


@pytest.mark.parametrize("final", ["no-answer", "failed", "canceled"])
async def test_calls_that_never_streamed_produce_a_result(
    instances: Instances, orchestrator: Orchestrator, final: str
) -> None:
    receiver, url = orchestrator
    api = await instances.start(result_webhook_url=url)
    sid = await dial(api, "cb-" + final)
    await status(api, "cb-" + final, sid, final, 1, ErrorCode="31000", ErrorMessage="x")
    result = await receiver.wait_for("cb-" + final)
    assert result["status"] == final
    assert result["error"] == {"code": "31000", "message": "x"}


async def test_voicemail_hang_up_is_reported_as_voicemail(
    instances: Instances, orchestrator: Orchestrator
) -> None:
    receiver, url = orchestrator
    api = await instances.start(result_webhook_url=url)
    sid = await dial(api, "cb-vm", agent={"metadata": {"lead": 9}})
    await status(api, "cb-vm", sid, "in-progress", 1)
    await amd(api, "cb-vm", sid, "machine_end_beep")
    await status(api, "cb-vm", sid, "completed", 2, CallDuration="7")
    result = await receiver.wait_for("cb-vm")
    assert result["status"] == "voicemail" and result["answeredBy"] == "machine_end_beep"
    assert result["duration"] == 7 and result["metadata"] == {"lead": 9}
    assert result["error"] is None and result["transcript"] == []


async def test_receiver_failing_three_times_gets_it_once(
    instances: Instances, orchestrator: Orchestrator
) -> None:
    receiver, url = orchestrator
    receiver.fail_next = [500, 503, 429]
    receiver.fail_after_next = [502]  # processed, but the answer is lost: sent again
    api = await instances.start(result_webhook_url=url)
    sid = await dial(api, "cb-flaky")
    await status(api, "cb-flaky", sid, "busy", 1)
    record = await record_when(api, "cb-flaky", delivered)
    attempts = receiver.attempts("cb-flaky")
    assert [a.status for a in attempts] == [500, 503, 429, 502, 200]
    assert len({a.body for a in attempts}) == 1
    assert len(receiver.results) == 1 and receiver.duplicates == 1
    assert record.delivery is not None and record.delivery.attempts == 5
    assert record.delivery.last_status == 200 and record.delivery.last_error is None


@pytest.mark.parametrize("answer", [400, 404, 410])
async def test_other_client_errors_are_not_retried(
    instances: Instances, orchestrator: Orchestrator, answer: int
) -> None:
    receiver, url = orchestrator
    receiver.fail_next = [answer]
    api = await instances.start(result_webhook_url=url)
    sid = await dial(api, "cb-4xx")
    await status(api, "cb-4xx", sid, "busy", 1)
    record = await record_when(
        api, "cb-4xx", lambda r: r.delivery is not None and r.delivery.state == "failed"
    )
    assert record.delivery is not None and record.delivery.last_status == answer
    assert record.delivery.attempts == 1 and len(receiver.received) == 1


async def test_a_receiver_that_rejects_the_signature_is_not_retried(
    instances: Instances, orchestrator: Orchestrator
) -> None:
    receiver, url = orchestrator
    api = await instances.start(result_webhook_url=url, result_webhook_secret="wrong-secret")
    sid = await dial(api, "cb-sig")
    await status(api, "cb-sig", sid, "busy", 1)
    record = await record_when(
        api, "cb-sig", lambda r: r.delivery is not None and r.delivery.state == "failed"
    )
    assert record.delivery is not None and record.delivery.last_status == 401
    assert receiver.results == {}


async def test_retries_stop_after_the_retry_period(
    instances: Instances, orchestrator: Orchestrator
) -> None:
    receiver, url = orchestrator
    receiver.fail_next = [503] * 1000
    # The first attempt must end within the period for a second one to be placed at its end:
    # a period well beyond what a first attempt takes on a loaded machine (0.3 s was not).
    api = await instances.start(result_webhook_url=url, delivery_retry_period=1.5)
    sid = await dial(api, "cb-long")
    await status(api, "cb-long", sid, "busy", 1)
    record = await record_when(
        api, "cb-long", lambda r: r.delivery is not None and r.delivery.state == "failed"
    )
    assert record.delivery is not None and record.delivery.last_error is not None
    assert record.delivery.last_error.startswith("gave up: HTTP 503")
    assert record.delivery.attempts >= 2 and receiver.results == {}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_receiver_down_across_a_restart_gets_it_after(instances: Instances) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/results"
    first = await instances.start(result_webhook_url=url)
    sid = await dial(first, "cb-restart")
    await status(first, "cb-restart", sid, "busy", 1)
    down = await record_when(
        first, "cb-restart", lambda r: r.delivery is not None and r.delivery.attempts >= 2
    )
    assert down.delivery is not None and down.delivery.state in ("pending", "delivering")
    assert down.delivery.last_status is None and down.delivery.last_error
    await instances.stop(first)

    receiver = OrchestratorEmulator(WEBHOOK_SECRET)
    server = LoopbackServer(receiver.app())
    await server.start(port)
    try:
        second = await instances.start(result_webhook_url=url)
        result = await receiver.wait_for("cb-restart")
        assert result["status"] == "busy"
        record = await record_when(second, "cb-restart", delivered)
        assert record.delivery is not None and record.delivery.attempts > down.delivery.attempts
    finally:
        await server.stop()


async def test_per_call_url_overrides_the_default(
    instances: Instances, orchestrator: Orchestrator
) -> None:
    receiver, url = orchestrator
    api = await instances.start(result_webhook_url=url)
    own = url.replace("/results", "/crm/42/call-result")
    sid = await dial(api, "cb-own", resultWebhookUrl=own)
    await status(api, "cb-own", sid, "no-answer", 1)
    await receiver.wait_for("cb-own")
    assert [r.path for r in receiver.received] == ["/crm/42/call-result"]


async def test_without_a_url_the_result_is_only_kept(instances: Instances) -> None:
    api = await instances.start()
    sid = await dial(api, "cb-quiet")
    await status(api, "cb-quiet", sid, "busy", 1)
    record = await api.services.store.get("cb-quiet")
    assert record is not None and record.result is not None and record.delivery is None


async def test_streamed_call_is_reported_by_the_bridge_not_the_record(
    instances: Instances, orchestrator: Orchestrator
) -> None:
    receiver, url = orchestrator
    api = await instances.start(result_webhook_url=url)
    sid = await dial(api, "cb-talk")
    await status(api, "cb-talk", sid, "in-progress", 1)
    await api.services.store.stream_started("cb-talk", "MZ1")
    await status(api, "cb-talk", sid, "completed", 2, CallDuration="31")
    record = await api.services.store.get("cb-talk")
    assert record is not None and record.result is None and record.delivery is None
    bridge_result = CallResult.model_validate(
        {
            "callbackId": "cb-talk",
            "callSid": sid,
            "status": "completed",
            "fullText": "agent: hello\nuser: hi",
            "transcript": [{"role": "agent", "text": "hello", "at": 0.4}],
        }
    )
    assert await api.services.calls.finish(bridge_result)
    result = await receiver.wait_for("cb-talk")
    assert result["fullText"] == "agent: hello\nuser: hi"
    assert not await api.services.calls.finish(bridge_result)
    await asyncio.sleep(0.1)
    assert len(receiver.received) == 1


async def test_a_bridge_that_never_reports_is_covered_from_the_record(
    instances: Instances, orchestrator: Orchestrator
) -> None:
    receiver, url = orchestrator
    api = await instances.start(result_webhook_url=url, result_grace=0.1)
    sid = await dial(api, "cb-lost")
    await status(api, "cb-lost", sid, "in-progress", 1)
    await api.services.store.stream_started("cb-lost", "MZ1")
    await status(api, "cb-lost", sid, "completed", 2)
    result = await receiver.wait_for("cb-lost")
    assert result["status"] == "completed" and result["error"]["code"] == "no_result"


async def test_cli_retry_resends_the_result(
    tmp_path: Path, twilio: tuple[TwilioRestEmulator, str], orchestrator: Orchestrator
) -> None:
    """End to end through the installed command, on a SQLite file (the command reads
    DATABASE_URL; the PostgreSQL tests use private schemas it cannot name)."""
    receiver, url = orchestrator
    database = Database("sqlite", f"sqlite:///{tmp_path}/cli.db")
    group = Instances(database, twilio[1])
    try:
        # The server's worker polls rarely (it is woken by its own results): the attempt
        # the command makes is the command's, not a racing poll of the server's.
        api = await group.start(result_webhook_url=url, delivery_poll_interval=60)
        sid = await dial(api, "cb-cli")
        await status(api, "cb-cli", sid, "busy", 1)
        await record_when(api, "cb-cli", delivered)
        settings = api.services.settings
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DATABASE_URL": database.url,
            "BASE_URL": settings.base_url,
            "TWILIO_ACCOUNT_SID": settings.twilio_account_sid,
            "TWILIO_AUTH_TOKEN": settings.twilio_auth_token,
            "TWILIO_PHONE_NUMBER": settings.twilio_phone_number,
            "OPENAI_API_KEY": "sk-test",
            "RESULT_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "RESULT_WEBHOOK_ALLOW_PRIVATE": "true",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "caller_engine",
            "deliveries",
            "retry",
            "cb-cli",
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        shown = orjson.loads(out)
        assert shown["delivery"]["state"] == "delivered" and shown["delivery"]["attempts"] == 2
        assert len(receiver.attempts("cb-cli")) == 2 and receiver.duplicates == 1
        record = await api.services.store.get("cb-cli")
        assert record is not None and record.delivery is not None
        assert record.delivery.attempts == 2
    finally:
        await group.stop_all()
