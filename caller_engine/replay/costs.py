"""What one call costs the server in CPU, phase by phase, measured one call at a time.

For each call: `/call/initiate` (when the call has a record), then setup (the TwiML fetch,
Twilio's `in-progress` callback, the media stream's start up to the first greeting audio, and
the store writes the start makes), then teardown (`stop`, the `completed` callback, and the
post-call work up to the stored result). Each phase is timed from its first request until the
server has been idle for a while, by the CPU time of all its threads in nanoseconds
(`/proc/<pid>/task/*/schedstat`), less what the idle server spends in the same time. The
greeting is one 100 ms delta, so streaming it costs next to nothing.

One call at a time, every phase starts on a server that has just idled: its code and data
are no longer in the CPU's caches, which makes each phase dearer than the same work on a busy
server. With `burst` > 1, that many calls go through each phase together (a burst of call
starts, then of hang-ups) and the phase's CPU is divided among them: the cost per call on a
warm server.
"""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from caller_engine.sim.openai.realtime import RealtimeScript, ScriptedResponse
from caller_engine.sim.twilio.media import TwilioMediaClient
from caller_engine.sim.twilio.rest import new_sid

if TYPE_CHECKING:
    from caller_engine.replay.driver import Driver

POLL_S = 0.02
QUIET_POLLS = 4  # the server is idle once this many polls in a row saw (almost) no CPU
QUIET_NS = 150_000  # per poll, beyond the idle rate
MAX_SETTLE_S = 5.0  # a server that never goes quiet: measure up to here
GREETING = b"\x11" * 800


def cpu_ns(pid: int) -> int | None:
    """CPU time of every thread of `pid` so far, in ns; None without /proc schedstat."""
    total = 0
    try:
        for task in (Path("/proc") / str(pid) / "task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except FileNotFoundError:
                continue  # a thread that just ended
    except (OSError, ValueError, IndexError):
        return None
    return total


@dataclass
class Meter:
    pid: int
    idle_ns_per_s: float = 0.0
    phases: dict[str, list[float]] = field(default_factory=dict)

    async def calibrate(self, seconds: float = 1.0) -> None:
        loop = asyncio.get_running_loop()
        start, began = cpu_ns(self.pid) or 0, loop.time()
        await asyncio.sleep(seconds)
        self.idle_ns_per_s = ((cpu_ns(self.pid) or 0) - start) / (loop.time() - began)

    def begin(self) -> tuple[int, float]:
        return cpu_ns(self.pid) or 0, asyncio.get_running_loop().time()

    async def settle_and_record(self, phase: str, mark: tuple[int, float], calls: int = 1) -> None:
        """Wait until the server is idle, then record the phase's CPU in ms per call."""
        loop = asyncio.get_running_loop()
        quiet = 0
        last = cpu_ns(self.pid) or 0
        allowance = self.idle_ns_per_s * POLL_S + QUIET_NS
        deadline = loop.time() + MAX_SETTLE_S
        while quiet < QUIET_POLLS and loop.time() < deadline:
            await asyncio.sleep(POLL_S)
            now = cpu_ns(self.pid) or 0
            quiet = quiet + 1 if now - last <= allowance else 0
            last = now
        elapsed = loop.time() - mark[1]
        used = last - mark[0] - self.idle_ns_per_s * elapsed
        self.phases.setdefault(phase, []).append(max(0.0, used) / 1e6 / calls)

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for phase, values in self.phases.items():
            out[phase] = {
                "calls": len(values),
                "medianMs": round(statistics.median(values), 2),
                "meanMs": round(statistics.fmean(values), 2),
                "maxMs": round(max(values), 2),
                "firstMs": round(values[0], 2),
            }
        return out


async def measure_call_costs(
    driver: Driver, calls: int, *, with_record: bool, burst: int = 1
) -> dict[str, Any]:
    """CPU per call and phase for `calls` calls, made `burst` at a time (one at a time: the
    first call also pays for what the server loads on first use; the median leaves that
    out)."""
    pid = driver.server_pid
    if pid is None or cpu_ns(pid) is None:
        return {}
    model = driver.emulators.model
    if model is not None:
        model.script_factory = lambda: RealtimeScript(
            [ScriptedResponse(text="Hi.", audio=GREETING)]
        )
    meter = Meter(pid)
    await meter.calibrate()
    kind = "record" if with_record else "norecord"
    for first in range(0, calls, burst):
        names = [
            f"cost-{driver.run_id}-{kind}-{burst}-{index}"
            for index in range(first, min(calls, first + burst))
        ]
        await _calls(driver, meter, names, with_record)
    return meter.report()


async def _calls(driver: Driver, meter: Meter, callback_ids: list[str], with_record: bool) -> None:
    """The calls' phases, each phase for all of them at once."""
    target, n = driver.target, len(callback_ids)
    if with_record:
        mark = meter.begin()
        sids = await asyncio.gather(*(driver._initiate(c) for c in callback_ids))
        await meter.settle_and_record("initiate", mark, n)
        urls = [driver._call_urls(sid, c) for sid, c in zip(sids, callback_ids, strict=True)]
    else:
        sids = [new_sid("CA") for _ in callback_ids]
        urls = [(f"{target.url}/twiml/outbound?callbackId={quote(c)}", None) for c in callback_ids]
    mark = meter.begin()
    answered = await asyncio.gather(
        *(_answer(driver, sid, url, status) for sid, (url, status) in zip(sids, urls, strict=True)),
        return_exceptions=True,
    )
    clients = [c for c in answered if isinstance(c, TwilioMediaClient)]
    try:
        if len(clients) < n:
            raise next(e for e in answered if isinstance(e, BaseException))
        await meter.settle_and_record("setup", mark, n)
        mark = meter.begin()
        await asyncio.gather(*(c.stop() for c in clients))
        for client, (_, status) in zip(clients, urls, strict=True):
            driver._status(status, client.call_sid, "completed", 2, CallDuration="1")
        await meter.settle_and_record("teardown", mark, n)
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def _answer(
    driver: Driver, call_sid: str, twiml_url: str, status_url: str | None
) -> TwilioMediaClient:
    """What Twilio does once the callee answers, up to the first greeting audio."""
    target = driver.target
    stream_url, params = await driver._fetch_twiml(twiml_url, call_sid)
    driver._status(status_url, call_sid, "in-progress", 1)
    client = TwilioMediaClient(
        stream_url,
        auth_token=target.auth_token,
        call_sid=call_sid,
        account_sid=target.account_sid,
        custom_parameters=params,
        session=driver._http(),
        continuous=False,
    )
    await client.connect()
    try:
        await client.wait_until(lambda: client.first_audio_at is not None, 10)
    except BaseException:
        await client.close()
        raise
    return client
