"""Emulator of an orchestrator that receives call results by webhook.

It does what a careful receiver should: verify `Caller-Engine-Signature` with the recipe
documented in the README (written out here on purpose, independent of the sender's code),
reject stale or forged requests, and process each `Idempotency-Key` once while answering
200 to its redeliveries. Failures can be injected with `fail_next` (HTTP statuses answered
before any processing) and `fail_after_next` (statuses answered after the result was
processed, as when a response is lost), and every request is recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web


def verify_signature(
    secret: str, header: str, body: bytes, now: float, tolerance: float = 300
) -> bool:
    """The README recipe: split t/v1, HMAC-SHA256 over b"<t>.<body>", compare, check age."""
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    t = next((v for k, v in parts if k.strip() == "t"), "")
    sigs = [v for k, v in parts if k.strip() == "v1"]
    if not t.isdigit() or abs(now - int(t)) > tolerance:
        return False
    mac = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(mac, s) for s in sigs)


@dataclass
class Received:
    path: str
    key: str | None
    signature: str | None
    body: bytes
    status: int


class OrchestratorEmulator:
    def __init__(
        self,
        secret: str | None,
        *,
        tolerance: float = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.secret = secret
        self.tolerance = tolerance
        self.clock = clock
        self.received: list[Received] = []
        self.results: dict[str, dict[str, Any]] = {}
        self.fail_next: list[int] = []
        self.fail_after_next: list[int] = []
        self.delay = 0.0  # seconds to take before answering, to widen races in tests
        self.duplicates = 0
        self._changed = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._receive)
        return app

    def attempts(self, key: str) -> list[Received]:
        return [r for r in self.received if r.key == key]

    async def wait_for(self, key: str, within: float = 5.0) -> dict[str, Any]:
        """The result processed under `key`, waiting for it if needed."""
        async with asyncio.timeout(within):
            while key not in self.results:
                self._changed.clear()
                await self._changed.wait()
        return self.results[key]

    async def wait_attempts(self, key: str, count: int, within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while len(self.attempts(key)) < count:
                self._changed.clear()
                await self._changed.wait()

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        key = request.headers.get("Idempotency-Key")
        signature = request.headers.get("Caller-Engine-Signature")
        response = self._answer(key, signature, body)
        self.received.append(Received(request.path, key, signature, body, response.status))
        self._changed.set()
        return response

    def _answer(self, key: str | None, signature: str | None, body: bytes) -> web.Response:
        if self.fail_next:
            status = self.fail_next.pop(0)
            return web.json_response({"error": "injected failure"}, status=status)
        if self.secret is not None and not verify_signature(
            self.secret, signature or "", body, self.clock(), self.tolerance
        ):
            return web.json_response({"error": "bad signature"}, status=401)
        if not key:
            return web.json_response({"error": "Idempotency-Key required"}, status=400)
        if key in self.results:
            self.duplicates += 1
            return web.json_response({"ok": True, "duplicate": True})
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return web.json_response({"error": "invalid JSON"}, status=400)
        self.results[key] = payload
        if self.fail_after_next:
            return web.json_response({"error": "lost"}, status=self.fail_after_next.pop(0))
        return web.json_response({"ok": True})
