"""Result webhooks cannot be turned against the network the server runs in."""

# ruff: noqa: F811  (pytest fixtures imported from tests.store_backends)

from __future__ import annotations

import socket
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from caller_engine.calls.models import AgentOverrides, CallRecord
from caller_engine.calls.result import CallResult
from caller_engine.calls.sql_store import SqlCallStore
from caller_engine.config import ConfigError
from caller_engine.results.destinations import url_problem
from caller_engine.results.worker import DeliveryConfig, DeliveryWorker
from caller_engine.sim.orchestrator import OrchestratorEmulator
from tests.conftest import Api, make_settings
from tests.store_backends import clock, db, orchestrator, store  # noqa: F401

Orchestrator = tuple[OrchestratorEmulator, str]

REFUSED = [
    "http://127.0.0.1:8080/r",
    "http://localhost/r",
    "http://api.localhost/r",
    "http://10.1.2.3/r",
    "http://172.16.0.1/r",
    "http://192.168.1.10/r",
    "http://100.64.0.1/r",
    "http://169.254.169.254/latest/meta-data/",
    "http://0.0.0.0/r",
    "http://[::1]/r",
    "http://[::]/r",
    "http://[fd12:3456::1]/r",
    "http://[fe80::1]/r",
    "http://[::ffff:127.0.0.1]/r",
    "http://[::ffff:169.254.169.254]/r",
    "http://127.1/r",
    "http://2130706433/r",
    "http://0x7f000001/r",
    "http://224.0.0.1/r",
]
ALLOWED = ["https://orch.example.com/results", "http://8.8.8.8/r", "https://[2001:4860::8888]/"]


@pytest.mark.parametrize("url", REFUSED)
def test_inward_destinations_are_refused(url: str) -> None:
    assert url_problem(url) is not None


@pytest.mark.parametrize("url", ALLOWED)
def test_public_destinations_pass(url: str) -> None:
    assert url_problem(url) is None


async def test_initiate_refuses_an_inward_result_webhook_with_422(api_factory: Any) -> None:
    api: Api = await api_factory()
    body = {"callbackId": "cb-ssrf", "to": "+15551234567"}
    metadata = {**body, "resultWebhookUrl": "http://169.254.169.254/latest/meta-data/"}
    resp = await api.initiate(metadata)
    assert resp.status == 422
    [field] = (await resp.json())["error"]["fields"]
    assert field["field"] == "resultWebhookUrl" and "link-local" in field["message"]
    assert await api.services.store.get("cb-ssrf") is None

    open_api: Api = await api_factory(result_webhook_allow_private=True)
    assert (
        await open_api.initiate({**body, "resultWebhookUrl": "http://10.0.0.7/r"})
    ).status == 200


def test_the_setting_is_checked_at_start_up() -> None:
    with pytest.raises(ConfigError, match=r"RESULT_WEBHOOK_URL: 10\.0\.0\.7 is a private address"):
        make_settings(result_webhook_url="http://10.0.0.7/results")
    allowed = make_settings(
        result_webhook_url="http://10.0.0.7/results", result_webhook_allow_private=True
    )
    assert allowed.result_webhook_url == "http://10.0.0.7/results"


class StubDns(AbstractResolver):
    """A DNS server answering every name with fixed addresses (a rebinding attacker's)."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for a in self.addresses
        ]

    async def close(self) -> None:
        return None


async def _queue(store: SqlCallStore, callback_id: str, url: str) -> None:
    await store.create(CallRecord(callback_id, "+15551234567", False, AgentOverrides()))
    result = CallResult(callbackId=callback_id, callSid=None, status="busy")
    assert await store.save_result(result, source="record", default_url=url)


@pytest.mark.parametrize("allow_private", [False, True])
async def test_delivery_checks_the_resolved_address(
    store: SqlCallStore, orchestrator: Orchestrator, allow_private: bool
) -> None:
    """A name that passed when the call was placed but now resolves inward (DNS rebinding),
    and a stored loopback URL, are refused at delivery and never retried."""
    receiver, url = orchestrator
    port = url.split(":")[2].split("/")[0]
    rebound = f"http://results.orch.example:{port}/results"
    await _queue(store, "cb-rebound", rebound)
    await _queue(store, "cb-loopback", url)
    config = DeliveryConfig(secret="whsec_test_secret", allow_private=allow_private)
    worker = DeliveryWorker(store.outbox, config, resolver=StubDns("::ffff:127.0.0.1", "127.0.0.1"))
    try:
        assert await worker.run_once() == 2
        assert await worker.run_once() == 0
    finally:
        await worker.stop()
    rebound_record = await store.get("cb-rebound")
    loopback_record = await store.get("cb-loopback")
    assert rebound_record is not None and rebound_record.delivery is not None
    assert loopback_record is not None and loopback_record.delivery is not None
    if allow_private:
        assert rebound_record.delivery.state == loopback_record.delivery.state == "delivered"
        assert len(receiver.attempts("cb-rebound")) == 1
        return
    assert rebound_record.delivery.state == loopback_record.delivery.state == "failed"
    assert rebound_record.delivery.last_error == (
        "results.orch.example resolves to 127.0.0.1, ::ffff:127.0.0.1, not a public address; "
        "set RESULT_WEBHOOK_ALLOW_PRIVATE=true to allow it"
    )
    assert "127.0.0.1 is a loopback address" in (loopback_record.delivery.last_error or "")
    assert receiver.attempts("cb-rebound") == [] and receiver.attempts("cb-loopback") == []
