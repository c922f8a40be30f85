"""What one call costs the server in CPU, phase by phase, measured one call at a time.

For each call: `/call/initiate` (when the call has a record), then setup (the TwiML fetch,
Twilio's `in-progress` callback, the media stream's start up to the first greeting audio, and
the store writes the start makes), then teardown (`stop`, the `completed` callback, and the
post-call work up to the stored result). Each phase is timed from its first request until the
server has been idle for a while, by the CPU time of all its threads in nanoseconds
(`/proc/<pid>/task/*/schedstat`), less what the idle server spends in the same time. The
greeting is one 100 ms delta, so streaming it costs next to nothing.
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

    async def settle_and_record(self, phase: str, mark: tuple[int, float]) -> None:
        """Wait until the server is idle, then record the phase's CPU in ms."""
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
        self.phases.setdefault(phase, []).append(max(0.0, used) / 1e6)

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


async def measure_call_costs(driver: Driver, calls: int, *, with_record: bool) -> dict[str, Any]:
    """CPU per phase for `calls` calls made one after another (the first call also pays for
    what the server loads on first use; the median leaves that out)."""
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
    for index in range(calls):
        callback_id = f"cost-{driver.run_id}-{kind}-{index}"
        await _one_call(driver, meter, callback_id, with_record)
    return meter.report()


async def _one_call(driver: Driver, meter: Meter, callback_id: str, with_record: bool) -> None:
    target = driver.target
    status_url: str | None = None
    if with_record:
        mark = meter.begin()
        call_sid = await driver._initiate(callback_id)
        await meter.settle_and_record("initiate", mark)
        twiml_url, status_url = driver._call_urls(call_sid, callback_id)
    else:
        call_sid = new_sid("CA")
        twiml_url = f"{target.url}/twiml/outbound?callbackId={quote(callback_id)}"
    mark = meter.begin()
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
        await meter.settle_and_record("setup", mark)
        mark = meter.begin()
        await client.stop()
        driver._status(status_url, call_sid, "completed", 2, CallDuration="1")
        await meter.settle_and_record("teardown", mark)
    finally:
        await client.close()
