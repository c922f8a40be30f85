"""The delivery worker: a background task that drains the outbox.

It never runs in a request handler or on the audio path: results are written to the
outbox by the store, and `wake()` only sets an event. Each loop claims due deliveries under
a lease, POSTs them concurrently, and settles each attempt (delivered, retry later with
backoff and jitter, or failed). On stop it gives back the leases it still holds. It also
sweeps, now and then, for calls that ended RESULT_GRACE seconds ago without a result (their
bridge never reported, e.g. its instance died) and has their result built from the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

import aiohttp
from aiohttp.abc import AbstractResolver
from loguru import logger

from caller_engine.calls.availability import is_unavailable, reason
from caller_engine.calls.models import CallRecord, utcnow
from caller_engine.config import Settings
from caller_engine.logging import call_logger
from caller_engine.results.destinations import GuardedResolver, url_problem
from caller_engine.results.outbox import Claim, Outbox
from caller_engine.results.policy import RetryPolicy, classify, next_attempt, retry_after
from caller_engine.results.sender import Attempt, post_result

MissingResultHandler = Callable[[CallRecord], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    secret: str | None = None
    default_url: str | None = None
    poll_interval: float = 2.0
    timeout: float = 10.0
    lease: float = 60.0
    concurrency: int = 8
    result_grace: float = 600.0
    sweep_interval: float = 30.0
    allow_private: bool = False
    policy: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryConfig:
        return cls(
            secret=settings.result_webhook_secret,
            default_url=settings.result_webhook_url,
            poll_interval=settings.delivery_poll_interval,
            timeout=settings.delivery_timeout,
            lease=settings.delivery_lease,
            concurrency=settings.delivery_concurrency,
            result_grace=settings.result_grace,
            sweep_interval=min(30.0, max(settings.delivery_poll_interval, settings.result_grace)),
            allow_private=settings.result_webhook_allow_private,
            policy=RetryPolicy(
                backoff_base=settings.delivery_backoff_base,
                backoff_cap=settings.delivery_backoff_cap,
                retry_period=settings.delivery_retry_period,
            ),
        )


def instance_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"


class DeliveryWorker:
    def __init__(
        self,
        outbox: Outbox,
        config: DeliveryConfig,
        *,
        owner: str | None = None,
        on_missing_result: MissingResultHandler | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        """`resolver` resolves webhook host names (the system's by default); unless
        private destinations are allowed, only public addresses it returns are used."""
        self.outbox = outbox
        self.config = config
        self.owner = owner or instance_id()
        self.on_missing_result = on_missing_result
        self._resolver = resolver
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._last_sweep = 0.0
        self._stopping = False
        self._database_down = False

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="result-delivery")

    async def stop(self, *, flush: bool = False) -> None:
        """Stop the loop; with `flush`, first try once more what is due (bounded by the
        attempt timeout), then give back any lease still held."""
        task, self._task = self._task, None
        self._stopping = True
        self._wake.set()
        if task is not None:
            # Let an attempt in flight finish and settle; cancel it past the attempt timeout.
            done, _ = await asyncio.wait({task}, timeout=self.config.timeout + 1)
            if not done:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if flush:
            try:
                async with asyncio.timeout(self.config.timeout + 1):
                    await self.run_once()
            except TimeoutError:
                logger.warning("result deliveries still in flight at shutdown")
            except Exception:
                logger.exception("result delivery at shutdown failed")
        try:
            released = await self.outbox.release(self.owner)
        except Exception:
            logger.exception("could not release delivery leases")
        else:
            if released:
                logger.info("released {} delivery lease(s) on shutdown", released)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def wake(self) -> None:
        """Look at the outbox now instead of at the next poll. Never blocks."""
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self._wake.clear()  # a wake() from here on cuts the idle wait short
            try:
                if loop.time() - self._last_sweep >= self.config.sweep_interval:
                    self._last_sweep = loop.time()
                    await self.sweep_once()
                sent = await self.run_once()
                if self._database_down:
                    self._database_down = False
                    logger.info("result delivery resumes: the database is back")
                if sent or self._stopping:
                    continue  # there may be more due right away
                delay = await self._idle_delay()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_unavailable(exc):
                    if not self._database_down:  # once per outage, not once per poll
                        logger.warning("result delivery waits for the database: {}", reason(exc))
                    self._database_down = True
                else:
                    logger.exception("result delivery loop failed; retrying")
                delay = self.config.poll_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _idle_delay(self) -> float:
        due = await self.outbox.next_due()
        if due is None:
            return self.config.poll_interval
        wait = (due - utcnow()).total_seconds()
        return min(max(wait, 0.0), self.config.poll_interval)

    # -- work ------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            resolver = self._resolver
            if not self.config.allow_private:
                resolver = GuardedResolver(resolver)
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver))
        return self._session

    async def run_once(self, callback_id: str | None = None) -> int:
        """Claim and attempt due deliveries once; the number attempted."""
        claims = await self.outbox.claim(
            self.owner, self.config.lease, self.config.concurrency, callback_id
        )
        if claims:
            await asyncio.gather(*(self._deliver(c) for c in claims))
        return len(claims)

    async def _deliver(self, claim: Claim) -> None:
        problem = None if self.config.allow_private else url_problem(claim.url)
        if problem is not None:
            await self.settle(claim, Attempt(None, f"{claim.url}: {problem}", refused=True))
            return
        attempt = await post_result(
            self._http(),
            claim.url,
            claim.callback_id,
            claim.payload,
            secret=self.config.secret,
            request_timeout=self.config.timeout,
        )
        await self.settle(claim, attempt)

    async def settle(self, claim: Claim, attempt: Attempt) -> str:
        """Record an attempt's outcome; what became of the delivery."""
        log = call_logger(claim.callback_id)
        verdict = "reject" if attempt.refused else classify(attempt.status)
        if verdict == "delivered" and attempt.status is not None:
            kept = await self.outbox.succeeded(claim, attempt.status)
            log.info("result delivered (attempt {}, HTTP {})", claim.attempt, attempt.status)
            return "delivered" if kept else "lease-lost"
        if verdict == "reject":
            await self.outbox.failed(claim, attempt.status, attempt.error)
            log.warning(
                "result refused, not retried (attempt {}): {}", claim.attempt, attempt.error
            )
            return "failed"
        now = utcnow()
        wait = retry_after(attempt.retry_after, now, self.config.policy.backoff_cap)
        when = next_attempt(claim.attempt, now, claim.enqueued_at, self.config.policy, wait)
        if when is None:
            await self.outbox.failed(claim, attempt.status, "gave up: " + attempt.error)
            log.error(
                "result delivery gave up after {} attempt(s): {}", claim.attempt, attempt.error
            )
            return "failed"
        await self.outbox.retry_at(claim, when, attempt.status, attempt.error)
        log.warning(
            "result delivery attempt {} failed ({}); next in {:.1f} s",
            claim.attempt,
            attempt.error,
            (when - now) / timedelta(seconds=1),
        )
        return "retry"

    async def sweep_once(self) -> int:
        """Have results built for ended calls that still have none after the grace time."""
        if self.on_missing_result is None:
            return 0
        before = utcnow() - timedelta(seconds=self.config.result_grace)
        missing = await self.outbox.calls_missing_result(before, 50)
        for record in missing:
            call_logger(record.callback_id, record.call_sid).warning(
                "no result {:g} s after the call ended; building it from the record",
                self.config.result_grace,
            )
            await self.on_missing_result(record)
        return len(missing)
