"""`caller-engine bench` (`make bench`): replay against a local server at several
concurrency levels, with the model emulator.

For each level a fresh server (`caller-engine serve`, its own SQLite file in a temporary
directory, its working directory there so no `.env` is read) is started, pinned with
`taskset` to the first allowed CPU when the machine has two or more; this process (the
emulators and the load driver) moves to the other CPUs. The figures are written to
`bench/results.json` and printed. Benchmarks record; they never fail on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from caller_engine.replay.driver import Driver, Level, LevelResult, Target
from caller_engine.replay.emulators import ELEVENLABS_AGENT, EmulatorOptions, Emulators
from caller_engine.replay.progress import Progress
from caller_engine.replay.report import (
    build_report,
    caveats,
    evaluate_targets,
    format_tables,
    format_targets,
)
from caller_engine.replay.run import finish_outputs
from caller_engine.replay.scenario import Scenario, synthetic_audio

DEFAULT_LEVELS = (1, 50, 100, 200)
BENCH_API_KEY = "bench-api-key"
_PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")


@dataclass(frozen=True)
class BenchOptions:
    levels: tuple[int, ...] = DEFAULT_LEVELS
    duration: float = 20.0
    ramp: float = 20.0
    out: Path = Path("bench/results.json")
    plot: Path | None = None
    pin: bool = True
    tool: bool = True  # False: no tool call in the cycle (the bridge's own cost alone)
    providers: tuple[str, ...] = ("openai",)  # realtime providers, measured one after another


@dataclass(frozen=True)
class Placement:
    server_cpu: int | None
    driver_cpus: frozenset[int] | None

    def describe(self) -> str:
        if self.server_cpu is None or self.driver_cpus is None:
            return "not pinned (needs Linux, taskset and at least two CPUs)"
        driver = ",".join(str(c) for c in sorted(self.driver_cpus))
        return f"server on CPU {self.server_cpu}, emulators and driver on CPU {driver}"


def plan_placement(pin: bool) -> Placement:
    """The server gets the first allowed CPU, this process the others (when possible)."""
    if not pin or not hasattr(os, "sched_getaffinity") or shutil.which("taskset") is None:
        return Placement(None, None)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return Placement(None, None)
    return Placement(cpus[0], frozenset(cpus[1:]))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_environment(
    emulators: Emulators, port: int, workdir: Path, level: int
) -> dict[str, str]:
    env = {name: os.environ[name] for name in _PASS_ENV if name in os.environ}
    env.update(emulators.server_env())
    env.update(
        BASE_URL=f"http://127.0.0.1:{port}",
        HOST="127.0.0.1",
        PORT=str(port),
        API_KEY=BENCH_API_KEY,
        DATABASE_URL=f"sqlite:///{workdir}/calls-{level}.db",
        DRAIN_TIMEOUT="5",
        ENVIRONMENT="development",
        LOG_LEVEL="INFO",
    )
    return env


class ServerProcess:
    """`caller-engine serve` as a child process, optionally pinned to one CPU."""

    def __init__(self, env: dict[str, str], workdir: Path, cpu: int | None, log: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.cpu = cpu
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        command = [sys.executable, "-m", "caller_engine", "serve"]
        if self.cpu is not None:
            command = ["taskset", "-c", str(self.cpu), *command]  # taskset execs: same pid
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *command,
                env=self.env,
                cwd=self.workdir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )

    @property
    def exited(self) -> bool:
        return self.proc is not None and self.proc.returncode is not None

    async def stop(self, within: float = 15.0) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), within)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def run_bench(options: BenchOptions, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    placement = plan_placement(options.pin)
    if placement.driver_cpus is not None:
        os.sched_setaffinity(0, placement.driver_cpus)
    scenario = Scenario() if options.tool else Scenario(tool=None)
    print(
        f"caller-engine bench: {', '.join(options.providers)}; levels "
        f"{', '.join(map(str, options.levels))}; {options.duration:g} s calls started at "
        f"{options.ramp:g}/s; {placement.describe()}",
        file=out,
        flush=True,
    )
    runs: dict[str, tuple[dict[str, Any], list[LevelResult]]] = {}
    for provider in options.providers:
        runs[provider] = await _bench_provider(provider, options, scenario, placement, out)
    if len(runs) == 1:
        [(report, results)] = runs.values()
    else:
        print("\nServer CPU per call, side by side (% of one core):", file=out)
        print(format_comparison({p: r for p, (r, _) in runs.items()}), file=out)
        report = {
            "providers": {p: r for p, (r, _) in runs.items()},
            "comparison": compare_cpu({p: r for p, (r, _) in runs.items()}),
        }
        results = [r for _, (_, rs) in runs.items() for r in rs]
    return finish_outputs(report, results, options.out, options.plot, out)


async def _bench_provider(
    provider: str,
    options: BenchOptions,
    scenario: Scenario,
    placement: Placement,
    out: TextIO,
) -> tuple[dict[str, Any], list[LevelResult]]:
    """Every level for one realtime provider, against its emulator; the report and results."""
    audio = [synthetic_audio(scenario, int(options.duration * 1000))]
    emulators = Emulators(EmulatorOptions(provider=provider))
    if emulators.elevenlabs is not None and scenario.tool:
        # Client tools live on the agent: give it the scenario's tool.
        agent = emulators.elevenlabs.agents[ELEVENLABS_AGENT]
        tool = {"type": "client", "name": scenario.tool, "description": scenario.tool}
        emulators.elevenlabs.define_client_tools(agent, [{**tool, "expects_response": True}])
    await emulators.start()
    workdir = Path(tempfile.mkdtemp(prefix="caller-engine-bench-"))
    port = free_port()
    target = Target(
        f"http://127.0.0.1:{port}",
        emulators.options.auth_token,
        emulators.options.account_sid,
        BENCH_API_KEY,
    )
    if len(options.providers) > 1:
        print(f"\n== {provider} ==", file=out, flush=True)
    results: list[LevelResult] = []
    log = workdir / "server.log"
    try:
        async with Driver(
            target, emulators, audio, scenario=scenario, progress=Progress()
        ) as driver:
            for level in options.levels:
                env = server_environment(emulators, port, workdir, level)
                server = ServerProcess(env, workdir, placement.server_cpu, log)
                await server.start()
                try:
                    await driver.wait_for_server(30)
                    driver.server_pid = server.pid
                    results.append(await driver.run_level(Level(level, level, options.ramp)))
                finally:
                    await server.stop()
    except Exception:
        print(f"bench failed; server log: {log}", file=sys.stderr)
        raise
    finally:
        await emulators.stop()
    levels = [r.report for r in results]
    targets = evaluate_targets(levels)
    config: dict[str, Any] = {
        "provider": provider,
        "levels": list(options.levels),
        "callSeconds": options.duration,
        "rampPerS": options.ramp,
        "placement": placement.describe(),
        "scenario": {
            "cycleMs": scenario.cycle_ms,
            "longResponseMs": scenario.long_ms,
            "tool": scenario.tool,
            "modelChunkMs": 100,
            "modelPace": emulators.options.model_pace,
        },
    }
    if emulators.gemini is not None:
        config["latencyFigures"] = (
            "caller→model and model→caller need frame markers, which do not survive the "
            "sample-rate conversion: greeting and turn latency only"
        )
    elif emulators.nova_sonic is not None:
        config["latencyFigures"] = (
            "caller→model and model→caller are timed at the OpenAI emulator's events: "
            "greeting and turn latency only"
        )
    notes = caveats(levels)
    report = build_report(levels, config, targets=targets, caveats=notes)
    print("\n" + format_tables(levels), file=out)
    print("\nTargets (informative; a benchmark never fails on timing):", file=out)
    print(format_targets(targets), file=out)
    if notes:
        print("\nCaveats:\n" + "\n".join(f"  {note}" for note in notes), file=out)
    shutil.rmtree(workdir, ignore_errors=True)
    return report, results


def compare_cpu(reports: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Server CPU per call by level for each provider, and its ratio to the first one's."""
    names = list(reports)
    by_level: dict[int, dict[str, float | None]] = {}
    for name, report in reports.items():
        for level in report.get("levels") or ():
            per_call = (level.get("server") or {}).get("cpuPercentPerCall")
            by_level.setdefault(int(level["concurrency"]), {})[name] = per_call
    rows: list[dict[str, Any]] = []
    for calls, values in sorted(by_level.items()):
        base = values.get(names[0])
        row: dict[str, Any] = {"calls": calls, "cpuPercentPerCall": values}
        row["ratio"] = {
            name: round(value / base, 2) if value and base else None
            for name, value in values.items()
        }
        rows.append(row)
    return rows


def format_comparison(reports: dict[str, dict[str, Any]]) -> str:
    names = list(reports)
    lines = [
        "| calls | "
        + " | ".join(names)
        + " | "
        + " | ".join(f"{n}/{names[0]}" for n in names[1:])
        + " |",
        "|---" * (1 + 2 * len(names) - 1) + "|",
    ]
    for row in compare_cpu(reports):
        cpu = [_fmt(row["cpuPercentPerCall"].get(n)) for n in names]
        ratios = [_fmt(row["ratio"].get(n)) for n in names[1:]]
        lines.append(f"| {row['calls']} | " + " | ".join(cpu + ratios) + " |")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"
