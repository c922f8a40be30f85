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

from caller_engine.replay.costs import measure_call_costs
from caller_engine.replay.driver import Driver, Level, LevelResult, Target
from caller_engine.replay.emulators import EmulatorOptions, Emulators
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
    profile: Path | None = None  # a directory: py-spy profiles of the server, one per level
    cost_calls: int = 20  # calls measured one at a time for setup / teardown CPU (0: none)


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


def profiler_command(pid: int, directory: Path, level: int | str) -> list[str]:
    """py-spy sampling the server (not a dependency: `pip install py-spy`), collapsed stacks
    to `directory/server-<level>.txt` (flamegraph.pl or speedscope read them)."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        raise RuntimeError("--profile needs py-spy (pip install py-spy)")
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"server-{level}.txt"
    sampling = ["record", "--pid", str(pid), "--rate", "200", "--nonblocking"]
    return [exe, *sampling, "--format", "raw", "--output", str(out)]


async def start_profiler(pid: int, directory: Path, level: int | str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *profiler_command(pid, directory, level),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def run_bench(options: BenchOptions, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    placement = plan_placement(options.pin)
    if placement.driver_cpus is not None:
        os.sched_setaffinity(0, placement.driver_cpus)
    scenario = Scenario() if options.tool else Scenario(tool=None)
    audio = [synthetic_audio(scenario, int(options.duration * 1000))]
    emulators = Emulators(EmulatorOptions())
    await emulators.start()
    workdir = Path(tempfile.mkdtemp(prefix="caller-engine-bench-"))
    port = free_port()
    target = Target(
        f"http://127.0.0.1:{port}",
        emulators.options.auth_token,
        emulators.options.account_sid,
        BENCH_API_KEY,
    )
    print(
        f"caller-engine bench: levels {', '.join(map(str, options.levels))}; "
        f"{options.duration:g} s calls started at {options.ramp:g}/s; {placement.describe()}",
        file=out,
        flush=True,
    )
    results: list[LevelResult] = []
    costs: dict[str, Any] = {}
    log = workdir / "server.log"
    try:
        async with Driver(
            target, emulators, audio, scenario=scenario, progress=Progress()
        ) as driver:
            if options.cost_calls > 0:
                env = server_environment(emulators, port, workdir, 0)
                server = ServerProcess(env, workdir, placement.server_cpu, log)
                await server.start()
                profiler: asyncio.subprocess.Process | None = None
                try:
                    await driver.wait_for_server(30)
                    driver.server_pid = server.pid
                    if options.profile is not None:
                        profiler = await start_profiler(server.pid, options.profile, "costs")
                    for with_record in (True, False):
                        key = "withRecord" if with_record else "withoutRecord"
                        costs[key] = await measure_call_costs(
                            driver, options.cost_calls, with_record=with_record
                        )
                finally:
                    await server.stop()
                    if profiler is not None:
                        await profiler.wait()
                print("\n" + format_costs(costs), file=out, flush=True)
            for level in options.levels:
                env = server_environment(emulators, port, workdir, level)
                server = ServerProcess(env, workdir, placement.server_cpu, log)
                await server.start()
                profiler = None
                try:
                    await driver.wait_for_server(30)
                    driver.server_pid = server.pid
                    if options.profile is not None:
                        profiler = await start_profiler(server.pid, options.profile, level)
                    results.append(await driver.run_level(Level(level, level, options.ramp)))
                finally:
                    await server.stop()
                    if profiler is not None:
                        await profiler.wait()  # py-spy writes its file when the server exits
    except Exception:
        print(f"bench failed; server log: {log}", file=sys.stderr)
        raise
    finally:
        await emulators.stop()
    levels = [r.report for r in results]
    targets = evaluate_targets(levels)
    config: dict[str, Any] = {
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
    notes = caveats(levels)
    report = build_report(levels, config, targets=targets, caveats=notes)
    if costs:
        report["callCosts"] = costs
    print("\n" + format_tables(levels), file=out)
    print("\nTargets (informative; a benchmark never fails on timing):", file=out)
    print(format_targets(targets), file=out)
    if notes:
        print("\nCaveats:\n" + "\n".join(f"  {note}" for note in notes), file=out)
    code = finish_outputs(report, results, options.out, options.plot, out)
    shutil.rmtree(workdir, ignore_errors=True)
    return code


def format_costs(costs: dict[str, Any]) -> str:
    """Per-call CPU of the server by phase, calls made one at a time."""
    lines = [
        "Server CPU per call, one call at a time (ms; median / mean / max, first call):",
    ]
    for key, label in (("withRecord", "initiated"), ("withoutRecord", "no record")):
        for phase, figures in (costs.get(key) or {}).items():
            lines.append(
                f"  {label:<10} {phase:<9} {figures['medianMs']:6.2f} / {figures['meanMs']:6.2f}"
                f" / {figures['maxMs']:6.2f}, first {figures['firstMs']:.2f}"
                f"  ({figures['calls']} calls)"
            )
    return "\n".join(lines)
