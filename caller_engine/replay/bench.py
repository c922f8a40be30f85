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
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TextIO

from caller_engine.replay.costs import measure_call_costs
from caller_engine.replay.driver import Driver, Level, LevelResult, Target
from caller_engine.replay.emulators import ELEVENLABS_AGENT, EmulatorOptions, Emulators
from caller_engine.replay.floor import (
    FLOOR_SCRIPT,
    compare,
    floor_command,
    floor_script,
    format_comparison,
)
from caller_engine.replay.progress import Progress
from caller_engine.replay.report import (
    build_report,
    caveats,
    evaluate_targets,
    format_tables,
    format_targets,
)
from caller_engine.replay.run import finish_outputs
from caller_engine.replay.scenario import AnyScenario, Scenario, TurnCycle, synthetic_audio

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
    cycle: str = "barge"  # "barge": barge-in cycle; "turns": a turn every 4 s, no barge-in
    record: bool = True  # False: calls without /call/initiate (no call record)
    floor: bool = True  # also run the floor bridge at every level, side by side
    profile: Path | None = None  # a directory: py-spy profiles of the server, one per level
    cost_calls: int = 20  # calls measured one at a time for setup / teardown CPU (0: none)
    cost_burst: int = 10  # and the same number again in bursts of this many (1: not)
    providers: tuple[str, ...] = ("openai",)  # realtime providers, measured one after another
    driver: str = "python"  # "node": the Node.js load generator of bench/loadgen/ (turn cycle)


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


class _Peers(Protocol):
    """What the server under test talks to (`Emulators`, or the node load generator)."""

    def server_env(self) -> dict[str, str]: ...


class _Measuring(Protocol):
    """A load driver: waits for the server, then measures it by pid."""

    server_pid: int | None

    async def wait_for_server(self, within: float) -> None: ...


class _LevelDriver(_Measuring, Protocol):
    """A load driver that also plays a whole level of calls."""

    async def run_level(self, level: Level) -> LevelResult: ...


def server_environment(peers: _Peers, port: int, workdir: Path, level: int) -> dict[str, str]:
    env = {name: os.environ[name] for name in _PASS_ENV if name in os.environ}
    env.update(peers.server_env())
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

    def __init__(
        self,
        env: dict[str, str],
        workdir: Path,
        cpu: int | None,
        log: Path,
        command: list[str] | None = None,
    ) -> None:
        self.env = env
        self.workdir = workdir
        self.cpu = cpu
        self.log = log
        self.command = command or [sys.executable, "-m", "caller_engine", "serve"]
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        command = self.command
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


@contextlib.asynccontextmanager
async def _running(
    driver: _Measuring,
    server: ServerProcess,
    profile: Path | None,
    name: int | str,
) -> AsyncIterator[None]:
    """A server process up and measured by the driver (and py-spy) until the block ends."""
    await server.start()
    profiler: asyncio.subprocess.Process | None = None
    try:
        await driver.wait_for_server(30)
        driver.server_pid = server.pid
        if profile is not None:
            profiler = await start_profiler(server.pid, profile, name)
        yield
    finally:
        await server.stop()
        if profiler is not None:
            await profiler.wait()  # py-spy writes its file when the server exits


async def run_level_pair(
    calls: int,
    options: BenchOptions,
    placement: Placement,
    env: dict[str, str],
    workdir: Path,
    log: Path,
    port: int,
    drivers: tuple[_LevelDriver, _LevelDriver],
    floor: tuple[Path, str] | None,
) -> tuple[LevelResult, LevelResult | None]:
    """One level against a fresh server, then (with `floor`: the floor bridge's script and the
    model emulator's key) the same calls against the floor bridge on the same CPU: (product
    result, floor result or None). `drivers` are the product's and the floor's."""
    product, bare = drivers
    server = ServerProcess(env, workdir, placement.server_cpu, log)
    async with _running(product, server, options.profile, calls):
        result = await product.run_level(Level(calls, calls, options.ramp, options.record))
    if floor is None:
        return result, None
    script, key = floor
    command = floor_command(script, port, env["OPENAI_REALTIME_URL"], key)
    floor_server = ServerProcess(env, workdir, placement.server_cpu, log, command)
    async with _running(bare, floor_server, None, f"floor-{calls}"):
        return result, await bare.run_level(Level(calls, calls, options.ramp, False))


def make_scenario(options: BenchOptions) -> AnyScenario:
    tool = "send_sms" if options.tool else None
    return TurnCycle(tool=tool) if options.cycle == "turns" else Scenario(tool=tool)


def driver_refusal(options: BenchOptions) -> str | None:
    """Why the chosen load driver cannot run these options (one sentence), or None."""
    if options.driver != "node":
        return None
    from caller_engine.replay.loadgen import loadgen_script, node_refusal

    return node_refusal(
        cycle=options.cycle,
        tool=options.tool,
        providers=options.providers,
        script=loadgen_script(),
    )


async def run_bench(options: BenchOptions, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if (refusal := driver_refusal(options)) is not None:
        raise ValueError(refusal)
    placement = plan_placement(options.pin)
    if placement.driver_cpus is not None:
        os.sched_setaffinity(0, placement.driver_cpus)
    runs: dict[str, tuple[dict[str, Any], list[LevelResult]]] = {}
    for provider in options.providers:
        if len(options.providers) > 1:
            print(f"\n== {provider} ==", file=out, flush=True)
        runs[provider] = await _bench_provider(provider, options, placement, out)
    if len(runs) == 1:
        [(report, results)] = runs.values()
    else:
        reports = {name: report for name, (report, _) in runs.items()}
        print("\nServer CPU per call, side by side (% of one core):", file=out)
        print(format_cpu_by_provider(reports), file=out)
        report = {"providers": reports, "comparison": compare_cpu(reports)}
        results = [r for _, rs in runs.values() for r in rs]
    return finish_outputs(report, results, options.out, options.plot, out)


async def _bench_provider(
    provider: str, options: BenchOptions, placement: Placement, out: TextIO
) -> tuple[dict[str, Any], list[LevelResult]]:
    """Every level for one realtime provider, against its emulator: the report and results.
    The floor bridge speaks OpenAI's protocol: it runs beside the OpenAI levels only."""
    scenario = make_scenario(options)
    floor_scenario = replace(scenario, tool=None)
    duration_ms = int(options.duration * 1000)
    audio = [synthetic_audio(scenario, duration_ms)]
    emulators = Emulators(EmulatorOptions(provider=provider))
    if emulators.elevenlabs is not None and scenario.tool:
        # Client tools live on the agent: give it the scenario's tool.
        agent = emulators.elevenlabs.agents[ELEVENLABS_AGENT]
        tool = {"type": "client", "name": scenario.tool, "description": scenario.tool}
        emulators.elevenlabs.define_client_tools(agent, [{**tool, "expects_response": True}])
    workdir = Path(tempfile.mkdtemp(prefix="caller-engine-bench-"))
    port = free_port()
    target = Target(
        f"http://127.0.0.1:{port}",
        emulators.options.auth_token,
        emulators.options.account_sid,
        BENCH_API_KEY,
    )
    script = floor_script() if options.floor and provider == "openai" else None
    print(
        f"caller-engine bench: {provider}; levels {', '.join(map(str, options.levels))}; "
        f"{options.duration:g} s calls started at {options.ramp:g}/s; {options.cycle} cycle, "
        f"tool {'on' if options.tool else 'off'}, "
        f"{'with' if options.record else 'without'} initiate records; "
        f"floor bridge {'on' if script else 'off'}; {options.driver} driver; "
        f"{placement.describe()}",
        file=out,
        flush=True,
    )
    if options.floor and provider == "openai" and script is None:
        print(f"  (no {FLOOR_SCRIPT} here: run the bench from the repository)", file=out)
    results: list[LevelResult] = []
    floors: list[LevelResult] = []
    costs: dict[str, Any] = {}
    log = workdir / "server.log"
    if options.driver == "node":
        from caller_engine.replay.loadgen import bench_node_levels

        if options.cost_calls > 0:
            print("  (per-call costs are measured with the Python driver only)", file=out)
        results, floors = await bench_node_levels(
            options, placement, scenario, audio[0], emulators.options, port, workdir, script, out
        )
        return _provider_report(
            provider, options, placement, scenario, emulators, results, floors, costs, workdir, out
        )
    await emulators.start()
    server_env = server_environment(emulators, port, workdir, 0)
    try:
        async with (
            Driver(target, emulators, audio, scenario=scenario, progress=Progress()) as driver,
            Driver(target, emulators, audio, scenario=floor_scenario, progress=Progress()) as bare,
        ):
            if options.cost_calls > 0:
                server = ServerProcess(server_env, workdir, placement.server_cpu, log)
                bursts = (1, options.cost_burst) if options.cost_burst > 1 else (1,)
                async with _running(driver, server, options.profile, "costs"):
                    for burst in bursts:
                        for with_record in (True, False):
                            key = cost_key("withRecord" if with_record else "withoutRecord", burst)
                            costs[key] = await measure_call_costs(
                                driver, options.cost_calls, with_record=with_record, burst=burst
                            )
                if script is not None:  # the same calls without a record, on the floor
                    model_url = server_env["OPENAI_REALTIME_URL"]
                    command = floor_command(script, port, model_url, emulators.options.openai_key)
                    floor = ServerProcess(server_env, workdir, placement.server_cpu, log, command)
                    async with _running(bare, floor, None, "floor-costs"):
                        for burst in bursts:
                            costs[cost_key("floor", burst)] = await measure_call_costs(
                                bare, options.cost_calls, with_record=False, burst=burst
                            )
                if len(bursts) > 1:
                    costs["burst"] = options.cost_burst
                print("\n" + format_costs(costs), file=out, flush=True)
            for level in options.levels:
                env = server_environment(emulators, port, workdir, level)
                bridge = (script, emulators.options.openai_key) if script is not None else None
                result, floor_result = await run_level_pair(
                    level, options, placement, env, workdir, log, port, (driver, bare), bridge
                )
                results.append(result)
                floors.extend([floor_result] if floor_result is not None else [])
    except Exception:
        print(f"bench failed; server log: {log}", file=sys.stderr)
        raise
    finally:
        await emulators.stop()
    return _provider_report(
        provider, options, placement, scenario, emulators, results, floors, costs, workdir, out
    )


def _provider_report(
    provider: str,
    options: BenchOptions,
    placement: Placement,
    scenario: AnyScenario,
    emulators: Emulators,
    results: list[LevelResult],
    floors: list[LevelResult],
    costs: dict[str, Any],
    workdir: Path,
    out: TextIO,
) -> tuple[dict[str, Any], list[LevelResult]]:
    """The report of one provider's levels (and the floor's beside them), printed."""
    levels = [r.report for r in results]
    comparison = [compare(p.report, f.report) for p, f in zip(results, floors, strict=False)]
    targets = evaluate_targets(levels) + floor_targets(comparison)
    config: dict[str, Any] = {
        "provider": provider,
        "levels": list(options.levels),
        "callSeconds": options.duration,
        "rampPerS": options.ramp,
        "placement": placement.describe(),
        "initiateRecords": options.record,
        "driver": options.driver,
        "scenario": {
            "cycle": options.cycle,
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
    if costs:
        report["callCosts"] = costs
    if comparison:
        report["floor"] = {
            "bridge": str(FLOOR_SCRIPT),
            "levels": [f.report for f in floors],
            "comparison": comparison,
        }
    print("\n" + format_tables(levels), file=out)
    if comparison:
        cycle = "with the tool call" if options.tool else "no tool call"
        records = "initiate records" if options.record else "no records"
        print("\n" + format_comparison(comparison, f"{cycle}, {records}"), file=out)
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
        ratio = {n: round(v / base, 2) if v and base else None for n, v in values.items()}
        rows.append({"calls": calls, "cpuPercentPerCall": values, "ratio": ratio})
    return rows


def format_cpu_by_provider(reports: dict[str, dict[str, Any]]) -> str:
    names = list(reports)
    ratios = [f"{n}/{names[0]}" for n in names[1:]]
    lines = [
        "| calls | " + " | ".join(names + ratios) + " |",
        "|---" * (1 + len(names) + len(ratios)) + "|",
    ]
    for row in compare_cpu(reports):
        cpu = [_fmt(row["cpuPercentPerCall"].get(n)) for n in names]
        ratio = [_fmt(row["ratio"].get(n)) for n in names[1:]]
        lines.append(f"| {row['calls']} | " + " | ".join(cpu + ratio) + " |")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def floor_targets(comparison: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets against the floor: CPU per call within 1.15× of it, and whole-level
    maximum latency and loss at 100 and 200 calls."""
    out: list[dict[str, Any]] = []
    for row in comparison:
        calls = row["calls"]
        if not calls or calls < 50:
            continue
        for name, key, limit in (
            ("CPU per call / floor bridge", "cpuPercentPerCall", 1.15),
            ("whole-level max ms caller→model", "callerToModelMaxWholeLevel", 100),
            ("whole-level max ms model→caller", "modelToCallerMaxWholeLevel", 100),
        ):
            entry = row[key]
            value = entry["ratio"] if key == "cpuPercentPerCall" else entry["product"]
            met = isinstance(value, int | float) and value <= limit
            out.append({"calls": calls, "target": name, "value": value, "limit": limit, "met": met})
        lossy = row["callsWithLoss"]["product"]
        out.append(
            {"calls": calls, "target": "calls with loss", "value": lossy, "limit": 0,
             "met": lossy == 0}
        )  # fmt: skip
    return out


def cost_key(kind: str, burst: int) -> str:
    """Where `costs` keeps a kind of call's figures: one at a time, or in bursts."""
    return kind if burst == 1 else kind + "Burst"


def format_costs(costs: dict[str, Any]) -> str:
    """Per-call CPU of the server by phase: calls made one at a time, then in bursts."""
    lines = []
    bursts = (1, int(costs["burst"])) if "burst" in costs else (1,)
    for burst in bursts:
        if burst == 1:
            lines.append(
                "Server CPU per call, one call at a time (ms; median / mean / max, first call):"
            )
        else:
            lines.append(
                f"Server CPU per call, calls in bursts of {burst} (ms per call; median / mean / "
                "max, first burst):"
            )
        floor = costs.get(cost_key("floor", burst)) or {}
        rows = (("withRecord", "initiated"), ("withoutRecord", "no record"), ("floor", "floor"))
        for kind, label in rows:
            for phase, figures in (costs.get(cost_key(kind, burst)) or {}).items():
                line = (
                    f"  {label:<10} {phase:<9} {figures['medianMs']:6.2f} / "
                    f"{figures['meanMs']:6.2f} / {figures['maxMs']:6.2f}, first "
                    f"{figures['firstMs']:.2f}  ({figures['calls']} "
                    f"{'calls' if burst == 1 else 'bursts'})"
                )
                base = floor.get(phase, {}).get("medianMs")
                if kind != "floor" and base:
                    line += f"  median {figures['medianMs'] / base:.2f}× the floor's"
                lines.append(line)
    return "\n".join(lines)
