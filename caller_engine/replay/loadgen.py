"""`caller-engine bench --driver node`: the Node.js load generator of `bench/loadgen/` as load
driver and as every peer of the server under test (Twilio's REST API and media streams, the
OpenAI Realtime model, Chat Completions for the summary), in one process of its own pinned to
the driver CPUs, so that this Python process no longer limits what a level can measure.

The generator records raw measurements (send and arrival times of every marked frame, on
CLOCK_MONOTONIC, which `time.monotonic()` and the event loop read too) and writes them to a
file per level; `level_result` rebuilds the replay `Recorder` from them, so every figure comes
from the same code as with the Python driver, while this process samples the server's, the
generator's and the machine's CPU over the same window.

Supported: the turn cycle without the tool call, OpenAI Realtime only, with or without
`/call/initiate`; other shapes are refused (`node_refusal`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import aiohttp
import orjson

from caller_engine.replay import markers
from caller_engine.replay.driver import (
    Level,
    LevelResult,
    ReplayError,
    _machine_report,
    _usage_report,
    level_figures,
    wait_healthy,
)
from caller_engine.replay.emulators import CHUNK_MS, EmulatorOptions
from caller_engine.replay.probes import Recorder, SessionProbe
from caller_engine.replay.procstat import ProcSampler
from caller_engine.replay.progress import Progress, bar
from caller_engine.replay.scenario import (
    AnyScenario,
    CallerAudio,
    PlannedResponse,
    TurnCycle,
    tone_bytes,
)
from caller_engine.replay.stats import summarize

if TYPE_CHECKING:
    from caller_engine.replay.bench import BenchOptions, Placement

LOADGEN_DIR = Path("bench") / "loadgen"
LOADGEN_MAIN = LOADGEN_DIR / "main.mjs"
DEFAULT_CALLEE = "+15557654321"


def loadgen_script(root: Path | None = None) -> Path | None:
    """The generator's entry point in the source tree (the bench runs from the repository)."""
    path = (root or Path.cwd()) / LOADGEN_MAIN
    return path if path.is_file() else None


def node_refusal(
    *, cycle: str, tool: bool, providers: Sequence[str], script: Path | None
) -> str | None:
    """Why `--driver node` cannot run these options (one sentence), or None when it can."""
    if shutil.which("node") is None:
        return "--driver node needs Node.js (`node` on PATH)."
    if script is None:
        return f"--driver node needs {LOADGEN_MAIN}: run the bench from the repository."
    if cycle != "turns" or tool:
        return "--driver node plays only the turn cycle without the tool (--cycle turns --no-tool)."
    if list(providers) != ["openai"]:
        return "--driver node emulates only the OpenAI Realtime model (--provider openai)."
    return None


def _pairs(flat: Sequence[Any]) -> list[tuple[float, float]]:
    return [(float(flat[i]), float(flat[i + 1])) for i in range(0, len(flat) - 1, 2)]


def rebuild_recorder(
    data: dict[str, Any], plan: list[PlannedResponse], repeat_from: int
) -> Recorder:
    """The Recorder the Python driver would hold after seeing what the generator saw."""
    recorder = Recorder(plan, repeat_from)
    for raw in data["calls"]:
        call = recorder.new_call(int(raw["index"]), str(raw["callbackId"]))
        call.call_sid = raw.get("callSid")
        call.started_at = raw.get("startedAt")
        call.first_audio_at = raw.get("firstAudioAt")
        call.stopped_at = raw.get("stoppedAt")
        call.error = raw.get("error")
        call.sent_at = [float(at) for at in raw["sentAt"]]
        sent = call.sent_at
        for seq, at in zip(raw["inSeq"], raw["inAt"], strict=True):
            if not call.inbound.arrive(seq):
                continue
            recorder.frames_in += 1
            if seq < len(sent):
                call.in_latency.append((sent[seq], (at - sent[seq]) * 1000.0))
        call.out_transit = _pairs(raw["outTransit"])
        call.turns = _pairs(raw["turns"])
        call.clears = [float(at) for at in raw["clears"]]
        call.media_messages = int(raw["mediaMessages"])
    for index, raw in enumerate(data["sessions"]):
        probe = SessionProbe(stream=raw.get("stream"), call=raw.get("call"))
        probe.speech_started = [float(at) for at in raw["speechStarted"]]
        emitted = raw["emitted"]
        for i in range(0, len(emitted) - 2, 3):
            probe.emitted[int(emitted[i])] = (float(emitted[i + 1]), str(emitted[i + 2]))
        for seq in raw["arrived"]:
            if probe.arrived.arrive(seq):
                recorder.frames_out += 1
        probe.cancelled = {str(rid): float(at) for rid, at in raw["cancelled"]}
        recorder.sessions[index] = probe
    return recorder


class NodeLoadgen:
    """The generator process: started once for the whole bench, one command per level."""

    def __init__(
        self,
        script: Path,
        scenario: AnyScenario,
        audio: CallerAudio,
        options: EmulatorOptions,
        *,
        cpus: frozenset[int] | None = None,
        api_key: str | None = None,
        progress: Progress | None = None,
    ) -> None:
        if not isinstance(scenario, TurnCycle) or scenario.tool:
            raise ValueError("the node load generator plays the turn cycle without the tool")
        self.script = script
        self.scenario = scenario
        self.audio = audio
        self.options = options
        self.cpus = cpus
        self.api_key = api_key
        self.progress = progress or Progress(enabled=False)
        self.server_pid: int | None = None
        self.target_url = ""
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix="caller-engine-loadgen-"))
        self.run_id = os.urandom(3).hex()
        self._levels = 0

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the load generator is not running")
        return self.proc.pid

    async def start(self) -> None:
        config = {
            "accountSid": self.options.account_sid,
            "authToken": self.options.auth_token,
            "openaiKey": self.options.openai_key,
            "pace": self.options.model_pace,
            "chunkMs": CHUNK_MS,
            "lateDeltas": self.options.late_deltas,
            "host": self.options.host,
        }
        command = ["node", str(self.script), orjson.dumps(config).decode()]
        if self.cpus is not None:  # taskset execs node: the pid is node's
            command = ["taskset", "-c", ",".join(map(str, sorted(self.cpus))), *command]
        self.proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=16 * 1024 * 1024,
        )
        message = await asyncio.wait_for(self._read(), 15)
        if message.get("type") != "ready":
            raise ReplayError(f"the node load generator did not start: {message}")
        self.port = int(message["port"])

    async def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ConnectionError):
                self._send({"cmd": "exit"})
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self.proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def __aenter__(self) -> NodeLoadgen:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _url(self, scheme: str = "http") -> str:
        host = self.options.advertise_host or self.options.host
        return f"{scheme}://{host}:{self.port}"

    def server_env(self) -> dict[str, str]:
        """What the server needs to use the generator's emulators (as Emulators.server_env)."""
        opts = self.options
        return {
            "TWILIO_ACCOUNT_SID": opts.account_sid,
            "TWILIO_AUTH_TOKEN": opts.auth_token,
            "TWILIO_PHONE_NUMBER": opts.phone_number,
            "TWILIO_API_BASE_URL": self._url(),
            "CALLING_HOURS": "00:00-24:00",
            "MAX_CALLS_PER_NUMBER": "0",
            "OPENAI_REALTIME_URL": self._url("ws") + "/v1/realtime",
            "OPENAI_API_KEY": opts.openai_key,
            "OPENAI_BASE_URL": self._url() + "/v1",
        }

    def _send(self, message: dict[str, Any]) -> None:
        if self.proc is None or self.proc.stdin is None:
            raise RuntimeError("the load generator is not running")
        self.proc.stdin.write(orjson.dumps(message) + b"\n")

    async def _read(self) -> dict[str, Any]:
        if self.proc is None or self.proc.stdout is None:
            raise RuntimeError("the load generator is not running")
        line = await self.proc.stdout.readline()
        if not line:
            raise ReplayError(f"the node load generator exited (code {self.proc.returncode})")
        message: dict[str, Any] = orjson.loads(line)
        return message

    async def stats(self) -> dict[str, Any]:
        """The generator's counters now: summaries served, REST requests, violations."""
        self._send({"cmd": "stats"})
        while True:
            message = await self._read()
            if message.get("type") == "stats":
                return message

    async def wait_for_server(self, within: float) -> None:
        """Until the server's GET /health answers 200; ReplayError after `within` seconds."""
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, self.target_url, within)

    def _level_command(self, level: Level, out: Path) -> dict[str, Any]:
        plan = self.scenario.responses()
        return {
            "cmd": "level",
            "out": str(out),
            "runId": self.run_id,
            "levelNo": self._levels,
            "concurrency": level.concurrency,
            "total": level.total,
            "rampPerS": level.ramp_per_s,
            "initiate": level.initiate,
            "callSeconds": self.audio.duration_s,
            "target": {
                "url": self.target_url,
                "apiKey": self.api_key,
                "authToken": self.options.auth_token,
                "accountSid": self.options.account_sid,
                "phoneNumber": self.options.phone_number,
                "callee": DEFAULT_CALLEE,
            },
            "audio": {
                "frames": base64.b64encode(b"".join(self.audio.frames)).decode(),
                "utterances": sorted(self.audio.utterances.items()),
            },
            "plan": [
                {
                    "text": p.text,
                    "audio": base64.b64encode(tone_bytes(p.audio_ms * 8)).decode(),
                }
                for p in plan
            ],
            "repeatFrom": self.scenario.repeat_from,
        }

    async def run_level(self, level: Level) -> LevelResult:
        """One level, measured as `Driver.run_level` measures it."""
        if self.target_url == "":
            raise RuntimeError("set target_url first")
        self._levels += 1
        out = self.workdir / f"level-{self._levels}.json"
        server = ProcSampler(self.server_pid) if self.server_pid else None
        driver = ProcSampler(self.pid)
        machine = ProcSampler(None)
        baseline = server.sample_now() if server else None
        samplers = [s for s in (server, driver, machine) if s is not None]
        for sampler in samplers:
            sampler.start()
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            self._send(self._level_command(level, out))
            while True:
                message = await self._read()
                kind = message.get("type")
                if kind == "progress":
                    self.progress.update(_progress_text(level, message))
                elif kind == "done":
                    break
                elif kind == "failed":
                    raise ReplayError(f"the node load generator failed: {message.get('error')}")
        finally:
            for sampler in samplers:
                await sampler.stop()
        data: dict[str, Any] = orjson.loads(out.read_bytes())
        out.unlink()
        result = level_result(
            data,
            self.scenario,
            level,
            duration_s=self.audio.duration_s,
            wall_s=loop.time() - began,
            samplers=(server, driver, machine),
            baseline_rss=baseline.rss_bytes if baseline else None,
        )
        self.progress.done(_progress_text(level, _final_progress(result.report)))
        return result


def level_result(
    data: dict[str, Any],
    scenario: AnyScenario,
    level: Level,
    *,
    duration_s: float,
    wall_s: float,
    samplers: tuple[ProcSampler | None, ProcSampler | None, ProcSampler | None],
    baseline_rss: int | None,
) -> LevelResult:
    """The level's report and samples from the generator's raw measurements (`data`)."""
    recorder = rebuild_recorder(data, scenario.responses(), scenario.repeat_from)
    report, samples, window = level_figures(
        recorder, level, call_seconds=duration_s, wall_seconds=wall_s
    )
    server, driver, machine = samplers
    if window is not None:
        if server is not None:
            report["server"] = _usage_report(server, window, baseline_rss)
        if driver is not None:
            report["driver"] = {
                **_usage_report(driver, window, None),
                "kind": "node",
                "loopLagMs": summarize(data["lagMs"]),
                "eventLoopDelayMs": data["eventLoopDelayMs"],
            }
        if machine is not None:
            report["machine"] = _machine_report(machine, window, report)
    report["loadgen"] = {
        "summaryRequests": data["summaries"],
        "twilioRest": data["rest"],
        "otherPosts": data["otherPosts"],
        "modelViolations": data["violations"],
        "markerStreams": markers.MAX_STREAM + 1,
    }
    return LevelResult(report, samples)


def _final_progress(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "done": report.get("calls", 0),
        "active": 0,
        "failed": report.get("failedCalls", 0),
        "framesIn": (report.get("callerToModel") or {}).get("received", 0),
        "framesOut": (report.get("modelToCaller") or {}).get("received", 0),
        "elapsed": report.get("wallSeconds", 0.0),
    }


def _progress_text(level: Level, message: dict[str, Any]) -> str:
    done = int(message.get("done", 0))
    return (
        f"{level.concurrency:>4} concurrent {bar(done, level.total)} "
        f"{done}/{level.total} done, {message.get('active', 0)} active, "
        f"{message.get('failed', 0)} failed | frames in {message.get('framesIn', 0)} "
        f"out {message.get('framesOut', 0)} | {float(message.get('elapsed', 0.0)):5.1f} s (node)"
    )


async def bench_node_levels(
    options: BenchOptions,
    placement: Placement,
    scenario: AnyScenario,
    audio: CallerAudio,
    emulator_options: EmulatorOptions,
    port: int,
    workdir: Path,
    floor_script: Path | None,
    out: TextIO,
) -> tuple[list[LevelResult], list[LevelResult]]:
    """Every level of `options` against a fresh server, then (with `floor_script`) against
    the floor bridge, all driven by one generator process: (product results, floor results)."""
    from caller_engine.replay.bench import BENCH_API_KEY, run_level_pair, server_environment

    main = loadgen_script()
    if main is None:
        raise ReplayError(f"no {LOADGEN_MAIN} here: run the bench from the repository")
    loadgen = NodeLoadgen(
        main,
        scenario,
        audio,
        emulator_options,
        cpus=placement.driver_cpus,
        api_key=BENCH_API_KEY,
        progress=Progress(),
    )
    loadgen.target_url = f"http://127.0.0.1:{port}"
    log = workdir / "server.log"
    floor = (floor_script, emulator_options.openai_key) if floor_script is not None else None
    results: list[LevelResult] = []
    floors: list[LevelResult] = []
    try:
        async with loadgen:
            print(
                f"  node load generator: pid {loadgen.pid}, "
                f"{shutil.which('node')}, emulators on port {loadgen.port}",
                file=out,
                flush=True,
            )
            for calls in options.levels:
                env = server_environment(loadgen, port, workdir, calls)
                result, floor_result = await run_level_pair(
                    calls, options, placement, env, workdir, log, port, (loadgen, loadgen), floor
                )
                results.append(result)
                floors.extend([floor_result] if floor_result is not None else [])
    except Exception:
        print(f"bench failed; server log: {log}", file=sys.stderr)
        raise
    return results, floors
