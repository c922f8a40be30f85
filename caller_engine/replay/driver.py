"""The load driver: concurrent calls entered the way Twilio enters them.

Each call: `POST /call/initiate` (API key) makes the server place a call through the Twilio
REST emulator; replay reads the TwiML URL and status callback the server gave Twilio, fetches
the TwiML with a signed POST (as Twilio does once the callee answers), posts a signed
`in-progress` status callback, opens the signed media-stream upgrade with the TwiML's
<Parameter>s, plays the caller audio with its timing, and hangs up (`stop`, then a
`completed` status callback). A REST hang-up by the server ends the stream, as on Twilio.
Calls start at `ramp_per_s` and at most `concurrency` run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import random
import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from caller_engine.replay.emulators import Emulators
from caller_engine.replay.lag import LoopLag
from caller_engine.replay.probes import CallProbe, Recorder
from caller_engine.replay.procstat import ProcSampler
from caller_engine.replay.progress import Progress, bar
from caller_engine.replay.scenario import (
    FRAME_S,
    AnyScenario,
    CallerAudio,
    PlannedGeminiScript,
    PlannedScript,
    Scenario,
)
from caller_engine.replay.sender import FrameSender
from caller_engine.sim.twilio.media import TwilioMediaClient
from caller_engine.sim.twilio.rest import EmulatedCall, new_sid
from caller_engine.telephony.signature import sign_twilio_request

SETUP_TIMEOUT = 15.0
MB = 1024 * 1024
DEFAULT_CALLEE = "+15557654321"


class ReplayError(Exception):
    """The run could not start (server unreachable, calls refused...)."""


@dataclass(frozen=True)
class Target:
    """The server under test and the credentials Twilio and the orchestrator would use."""

    url: str
    auth_token: str
    account_sid: str
    api_key: str | None = None
    callee: str = DEFAULT_CALLEE


@dataclass(frozen=True)
class Level:
    concurrency: int
    total: int
    ramp_per_s: float
    initiate: bool = True  # False: no /call/initiate (no call record); Twilio's part only


@dataclass
class LevelResult:
    report: dict[str, Any]
    samples: dict[str, list[float]]


def steady_window(calls: list[CallProbe]) -> tuple[float, float, int, bool] | None:
    """(start, end, calls active, every call up throughout) of the span when every call
    was up; when that span is under a second, the whole run with its mean concurrency."""
    spans = [
        (c.started_at, c.stopped_at)
        for c in calls
        if c.started_at is not None and c.stopped_at is not None
    ]
    if not spans:
        return None
    start = max(s for s, _ in spans)
    end = min(e for _, e in spans)
    if end - start >= 1.0:
        return start, end, len(spans), True
    start, end = min(s for s, _ in spans), max(e for _, e in spans)
    busy = sum(e - s for s, e in spans)
    return start, end, max(1, round(busy / max(end - start, 1e-9))), False


def level_figures(
    recorder: Recorder, level: Level, *, call_seconds: float, wall_seconds: float
) -> tuple[dict[str, Any], dict[str, list[float]], tuple[float, float, int, bool] | None]:
    """A level's report (its figures over the steady window, which it names), its latency
    samples, and that window."""
    window = steady_window(recorder.calls)
    figures = recorder.finish(window[:2] if window else None)
    samples = figures.pop("_samples")
    report: dict[str, Any] = {
        "concurrency": level.concurrency,
        "rampPerS": level.ramp_per_s,
        "callSeconds": round(call_seconds, 3),
        "wallSeconds": round(wall_seconds, 3),
        **figures,
    }
    if window is not None:
        report["window"] = {
            "seconds": round(window[1] - window[0], 3),
            "activeCalls": window[2],
            "allCallsUp": window[3],
        }
    return report, samples, window


class Driver:
    def __init__(
        self,
        target: Target,
        emulators: Emulators,
        audio: list[CallerAudio],
        *,
        scenario: AnyScenario | None = None,
        server_pid: int | None = None,
        progress: Progress | None = None,
    ) -> None:
        if not audio:
            raise ValueError("no caller audio")
        self.target = target
        self.emulators = emulators
        self.audio = audio
        self.scenario: AnyScenario = scenario or Scenario()
        self.marked = emulators.realtime is not None
        self.server_pid = server_pid
        self.progress = progress or Progress(enabled=False)
        self.run_id = secrets.token_hex(3)
        self.http: aiohttp.ClientSession | None = None
        self._clients: dict[str, TwilioMediaClient] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._levels = 0
        self.last_recorder: Recorder | None = None
        emulators.rest.on_call_updated.append(self._on_call_updated)

    async def __aenter__(self) -> Driver:
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        self.http = aiohttp.ClientSession(connector=connector)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._drain_background()
        if self.http is not None:
            await self.http.close()
            self.http = None

    def _http(self) -> aiohttp.ClientSession:
        if self.http is None:
            raise RuntimeError("use `async with Driver(...)`")
        return self.http

    # -- the server ------------------------------------------------------------------------

    async def wait_for_server(self, within: float) -> None:
        """Until GET /health answers 200; ReplayError after `within` seconds."""
        await wait_healthy(self._http(), self.target.url, within)

    # -- one level -------------------------------------------------------------------------

    async def run_level(self, level: Level) -> LevelResult:
        self._levels += 1
        self.emulators.reset()
        plan = self.scenario.responses() if self.marked else None
        recorder = Recorder(plan, self.scenario.repeat_from)
        self.last_recorder = recorder
        model = self.emulators.realtime
        if model is not None:
            model.script_factory = recorder.new_script
            model.on_input_audio = recorder.on_input_audio
            model.on_server_event = recorder.on_server_event
            model.on_client_event = recorder.on_client_event
        gemini = self.emulators.gemini
        if gemini is not None:
            plan = self.scenario.responses()
            gemini.script_factory = lambda: PlannedGeminiScript(plan=plan)
        nova_sonic = self.emulators.nova_sonic
        if nova_sonic is not None:
            planned = self.scenario.responses()
            nova_sonic.script_factory = lambda: PlannedScript(plan=planned)
            # The caller's turns end after the server's VAD pause, as at the other emulators.
            scenario = self.scenario
            silence = scenario.vad_silence_ms if isinstance(scenario, Scenario) else 500
            nova_sonic.endpointing_ms = silence
        # Collector passes over the driver's own heap (tens of ms, growing with the run, and
        # finding nothing: what a level allocates stays alive until it ends) would stall its
        # loop and show as latency. The collector is off for the level, run once after it.
        gc.collect()
        gc.freeze()
        gc_was_enabled = gc.isenabled()
        gc.disable()
        server = ProcSampler(self.server_pid) if self.server_pid else None
        driver = ProcSampler(os.getpid())
        machine = ProcSampler(None)
        lag = LoopLag()
        loop = asyncio.get_running_loop()
        baseline = server.sample_now() if server else None
        for sampler in (server, driver, machine):
            if sampler is not None:
                sampler.start()
        lag.start()
        sender = FrameSender(recorder)
        sender.start()
        began = loop.time()
        gate = asyncio.Semaphore(level.concurrency)
        tasks: list[asyncio.Task[None]] = []
        ticker = asyncio.create_task(self._tick(level, recorder, tasks, began))
        try:
            for index in range(level.total):
                delay = began + index / level.ramp_per_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await gate.acquire()
                call = self._call(index, recorder, sender, gate, initiate=level.initiate)
                tasks.append(asyncio.create_task(call))
            await asyncio.gather(*tasks)
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await sender.stop()
            await lag.stop()
            for sampler in (server, driver, machine):
                if sampler is not None:
                    await sampler.stop()
            if model is not None:
                model.on_input_audio = model.on_server_event = model.on_client_event = None
            await self._drain_background()
            gc.unfreeze()
            if gc_was_enabled:
                gc.enable()
        self._progress_line(level, recorder, tasks, began, final=True)
        report, samples, window = level_figures(
            recorder,
            level,
            call_seconds=max(a.duration_s for a in self.audio),
            wall_seconds=loop.time() - began,
        )
        if server is not None and window is not None:
            report["server"] = _usage_report(
                server, window, baseline.rss_bytes if baseline else None
            )
        if window is not None:
            report["driver"] = {
                **_usage_report(driver, window, None),
                "loopLagMs": lag.summary(),
            }
            report["machine"] = _machine_report(machine, window, report)
        return LevelResult(report, samples)

    async def _tick(
        self, level: Level, recorder: Recorder, tasks: list[asyncio.Task[None]], began: float
    ) -> None:
        while True:
            self._progress_line(level, recorder, tasks, began)
            await asyncio.sleep(0.25)

    def _progress_line(
        self,
        level: Level,
        recorder: Recorder,
        tasks: list[asyncio.Task[None]],
        began: float,
        final: bool = False,
    ) -> None:
        done = sum(1 for t in tasks if t.done())
        active = len(tasks) - done
        failed = sum(1 for c in recorder.calls if c.error)
        elapsed = asyncio.get_running_loop().time() - began
        text = (
            f"{level.concurrency:>4} concurrent {bar(done, level.total)} "
            f"{done}/{level.total} done, {active} active, {failed} failed | "
            f"frames in {recorder.frames_in} out {recorder.frames_out} | {elapsed:5.1f} s"
        )
        if final:
            self.progress.done(text)
        else:
            self.progress.update(text)

    # -- one call --------------------------------------------------------------------------

    async def _call(
        self,
        index: int,
        recorder: Recorder,
        sender: FrameSender,
        gate: asyncio.Semaphore,
        *,
        initiate: bool = True,
    ) -> None:
        loop = asyncio.get_running_loop()
        callback_id = f"replay-{self.run_id}-{self._levels}-{index}"
        probe = recorder.new_call(index, callback_id)
        audio = self.audio[index % len(self.audio)]
        client: TwilioMediaClient | None = None
        status_url: str | None = None
        try:
            async with asyncio.timeout(SETUP_TIMEOUT):
                if initiate:
                    call_sid = await self._initiate(callback_id)
                    twiml_url, status_url = self._call_urls(call_sid, callback_id)
                else:  # answered as if placed elsewhere: the server has no record of it
                    call_sid = new_sid("CA")
                    twiml_url = f"{self.target.url}/twiml/outbound?callbackId={callback_id}"
                probe.call_sid = call_sid
                stream_url, params = await self._fetch_twiml(twiml_url, call_sid)
                self._status(status_url, call_sid, "in-progress", 1)
                client = TwilioMediaClient(
                    stream_url,
                    auth_token=self.target.auth_token,
                    call_sid=call_sid,
                    account_sid=self.target.account_sid,
                    custom_parameters=params,
                    session=self._http(),
                    continuous=False,
                )
                client.on_media(functools.partial(recorder.on_media, probe))
                client.on_clear(functools.partial(recorder.on_clear, probe))
                self._clients[call_sid] = client
                await client.connect()
            probe.started_at = client.started_at
            phase = random.Random(index).random() * FRAME_S  # calls are not frame-aligned
            await sender.play(client, probe, audio, marked=self.marked, delay=phase)
            probe.stopped_at = loop.time()
        except Exception as exc:
            probe.error = probe.error or f"{type(exc).__name__}: {exc}"
        finally:
            if probe.stopped_at is None:
                probe.stopped_at = loop.time()
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
                self._clients.pop(client.call_sid, None)
                duration = str(round(probe.stopped_at - (probe.started_at or probe.stopped_at)))
                self._status(status_url, client.call_sid, "completed", 2, CallDuration=duration)
            gate.release()

    def _on_call_updated(self, call: EmulatedCall) -> None:
        """The server hung up through the REST API: Twilio ends the media stream."""
        client = self._clients.get(call.sid)
        if client is not None and call.status in ("completed", "canceled"):
            self._spawn(client.stop())

    # -- Twilio's requests -----------------------------------------------------------------

    async def _initiate(self, callback_id: str) -> str:
        headers = {"X-API-Key": self.target.api_key} if self.target.api_key else {}
        body = {"callbackId": callback_id, "to": self.target.callee}
        async with self._http().post(
            self.target.url + "/call/initiate", json=body, headers=headers
        ) as resp:
            text = await resp.text()
            if resp.status != 200:
                raise ReplayError(f"/call/initiate answered {resp.status}: {text[:200]}")
            data = await resp.json(content_type=None)
        sid = data.get("callSid") if isinstance(data, dict) else None
        if not isinstance(sid, str):
            raise ReplayError(f"/call/initiate gave no callSid: {text[:200]}")
        return sid

    def _call_urls(self, call_sid: str, callback_id: str) -> tuple[str, str | None]:
        """The TwiML URL and status callback the server gave Twilio for this call."""
        placed = self.emulators.rest.calls.get(call_sid)
        fallback = f"{self.target.url}/twiml/outbound?callbackId={quote(callback_id)}"
        if placed is None:
            return fallback, None
        return placed.url or fallback, placed.get("StatusCallback") or None

    def _twilio_params(self, call_sid: str, status: str) -> dict[str, str]:
        return {
            "CallSid": call_sid,
            "AccountSid": self.target.account_sid,
            "From": self.emulators.options.phone_number,
            "To": self.target.callee,
            "CallStatus": status,
            "Direction": "outbound-api",
            "ApiVersion": "2010-04-01",
        }

    async def _fetch_twiml(self, url: str, call_sid: str) -> tuple[str, dict[str, str]]:
        params = self._twilio_params(call_sid, "in-progress")
        headers = {"X-Twilio-Signature": sign_twilio_request(self.target.auth_token, url, params)}
        async with self._http().post(url, data=params, headers=headers) as resp:
            text = await resp.text()
            if resp.status != 200:
                raise ReplayError(f"TwiML fetch answered {resp.status}: {text[:200]}")
        return parse_stream_twiml(text)

    def _status(
        self, url: str | None, call_sid: str, status: str, sequence: int, **extra: str
    ) -> None:
        if not url:
            return
        params = {
            **self._twilio_params(call_sid, status),
            "SequenceNumber": str(sequence),
            "CallbackSource": "call-progress-events",
            **extra,
        }
        signature = sign_twilio_request(self.target.auth_token, url, params)

        async def post() -> None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self._http().post(
                    url, data=params, headers={"X-Twilio-Signature": signature}
                ) as resp:
                    await resp.read()

        self._spawn(post())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _drain_background(self) -> None:
        if self._background:
            await asyncio.wait(set(self._background), timeout=10)


async def wait_healthy(http: aiohttp.ClientSession, url: str, within: float) -> None:
    """Until the server at `url` answers GET /health with 200; ReplayError after `within`
    seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last = "no answer"
    while loop.time() < deadline:
        try:
            async with http.get(url + "/health", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            last = type(exc).__name__
        await asyncio.sleep(0.2)
    raise ReplayError(f"server at {url} not healthy within {within:g} s ({last})")


def parse_stream_twiml(text: str) -> tuple[str, dict[str, str]]:
    """The <Connect><Stream> URL and its <Parameter>s; ReplayError for any other TwiML."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ReplayError(f"TwiML is not XML: {exc}") from None
    stream = root.find("Connect/Stream")
    if stream is None or not stream.get("url"):
        raise ReplayError(f"TwiML has no <Connect><Stream>: {text[:200]}")
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return stream.get("url", ""), params


def _usage_report(
    sampler: ProcSampler, window: tuple[float, float, int, bool], baseline_rss: int | None
) -> dict[str, Any]:
    start, end, active, _ = window
    usage = sampler.usage(start, end)
    out: dict[str, Any] = {"pid": sampler.pid, "activeCalls": active}
    if usage is None:
        return out
    out.update(
        cpuPercent=usage.cpu_percent,
        cpuPercentPerCall=round(usage.cpu_percent / active, 4),
        rssMb=round(usage.rss_bytes / MB, 1),
        rssPeakMb=round(usage.rss_peak_bytes / MB, 1),
        windowSeconds=usage.window_s,
    )
    if baseline_rss is not None:
        out["rssBaselineMb"] = round(baseline_rss / MB, 1)
        out["rssMbPerCall"] = round((usage.rss_bytes - baseline_rss) / active / MB, 3)
    return out


def _machine_report(
    sampler: ProcSampler, window: tuple[float, float, int, bool], report: dict[str, Any]
) -> dict[str, Any]:
    """CPU use of the whole machine in the window, and what other processes took: load
    from outside the run makes the latency figures unreliable."""
    usage = sampler.usage(window[0], window[1])
    if usage is None:
        return {}
    server, driver = report.get("server") or {}, report.get("driver") or {}
    ours = float(driver.get("cpuPercent") or 0.0)
    if server.get("pid") != driver.get("pid"):
        ours += float(server.get("cpuPercent") or 0.0)
    return {
        "processesCpuPercent": usage.cpu_percent,
        "otherProcessesCpuPercent": round(max(0.0, usage.cpu_percent - ours), 2),
        "interruptsCpuPercent": usage.irq_percent,
        "stealCpuPercent": usage.steal_percent,
        "cpus": os.cpu_count(),
    }
