"""`caller-engine replay`: load replay against a running server.

Replay always runs the Twilio REST emulator (it plays Twilio, so it must see the calls the
server places) and, with `--model emulator` (the default), the OpenAI Realtime and Chat
Completions emulators whose frames carry markers. It prints the environment the server
needs to use them, waits for the server's /health, runs each concurrency level, then prints
the tables and writes the report.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from caller_engine.replay.captures import find_captures, load_capture
from caller_engine.replay.driver import Driver, Level, LevelResult, Target
from caller_engine.replay.emulators import EmulatorOptions, Emulators
from caller_engine.replay.plot import PlotUnavailable, plot_latency
from caller_engine.replay.procstat import find_listening_pid
from caller_engine.replay.progress import Progress
from caller_engine.replay.report import build_report, caveats, format_tables, write_report
from caller_engine.replay.scenario import CallerAudio, Scenario, spoken_audio, synthetic_audio


@dataclass(frozen=True)
class ReplayOptions:
    url: str
    levels: list[int]
    total: int | None = None  # calls per level; default: the level's concurrency
    ramp: float = 10.0  # calls started per second
    duration: float = 30.0  # seconds per synthetic call (cap for captures)
    captures: list[Path] = field(default_factory=list)
    model: str = "emulator"  # or "external": the server's own model, no markers
    api_key: str | None = None
    auth_token: str = ""
    account_sid: str = ""
    server_pid: int | None = None
    wait: float = 120.0
    out: Path | None = None
    plot: Path | None = None
    emulator_host: str = "127.0.0.1"
    advertise_host: str | None = None
    emulator_port: int = 18180
    provider: str = "openai"  # the realtime provider the bundled model emulates


def load_audio(
    captures: Sequence[Path], duration: float, scenario: Scenario, real_model: bool
) -> list[CallerAudio]:
    """Caller audio for the calls: captures (each capped at `duration`), or synthetic speech
    for the emulator, or the packaged voice clips for a real model."""
    if captures:
        return [load_capture(path).audio(duration) for path in find_captures(list(captures))]
    duration_ms = int(duration * 1000)
    if real_model:
        return [spoken_audio(duration_ms)]
    return [synthetic_audio(scenario, duration_ms)]


def _shown(name: str, value: str, defaults: dict[str, str]) -> str:
    """Secrets the operator gave are not echoed; replay's own defaults are."""
    if name in ("TWILIO_AUTH_TOKEN", "API_KEY") and value != defaults.get(name):
        return (
            f"<the value given with --{'auth-token' if name == 'TWILIO_AUTH_TOKEN' else 'api-key'}>"
        )
    return value


def _local_port(url: str) -> int | None:
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    return parts.port or (443 if parts.scheme == "https" else 80)


def server_env_text(emulators: Emulators, options: ReplayOptions, defaults: dict[str, str]) -> str:
    env = {"BASE_URL": options.url}
    port = _local_port(options.url)
    if port is not None:
        env["PORT"] = str(port)
    env.update(emulators.server_env())
    if options.api_key:
        env["API_KEY"] = options.api_key
    lines = [f"  {name}={_shown(name, value, defaults)}" for name, value in env.items()]
    return "\n".join(lines)


def report_config(options: ReplayOptions, audio: list[CallerAudio]) -> dict[str, Any]:
    config = {
        key: value
        for key, value in asdict(options).items()
        if key not in ("api_key", "auth_token", "out", "plot", "captures")
    }
    config["audio"] = sorted({a.source for a in audio})
    return config


async def run_replay(options: ReplayOptions, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    real_model = options.model != "emulator"
    scenario = Scenario()
    audio = load_audio(options.captures, options.duration, scenario, real_model)
    emulator_options = EmulatorOptions(
        host=options.emulator_host,
        advertise_host=options.advertise_host,
        port=options.emulator_port,
        model=not real_model,
        provider=options.provider,
        account_sid=options.account_sid,
        auth_token=options.auth_token,
    )
    defaults = {"TWILIO_AUTH_TOKEN": EmulatorOptions().auth_token, "API_KEY": ""}
    emulators = Emulators(emulator_options)
    await emulators.start()
    print("Replay's emulators are up. The server under test needs this environment:", file=out)
    print(server_env_text(emulators, options, defaults), file=out)
    if real_model:
        print("  (the model is the server's own: OPENAI_* settings are left as they are)", file=out)
    out.flush()
    target = Target(options.url, options.auth_token, options.account_sid, options.api_key)
    results: list[LevelResult] = []
    try:
        async with Driver(
            target,
            emulators,
            audio,
            scenario=scenario,
            server_pid=options.server_pid,
            progress=Progress(),
        ) as driver:
            print(f"Waiting for {options.url}/health ...", file=out, flush=True)
            await driver.wait_for_server(options.wait)
            port = _local_port(options.url)
            if driver.server_pid is None and port is not None:
                driver.server_pid = find_listening_pid(port)
                if driver.server_pid is not None:
                    print(f"Server pid {driver.server_pid} (listening on port {port}).", file=out)
            if driver.server_pid is None:
                print("Server pid unknown (--server-pid): no server CPU or RSS.", file=out)
            for concurrency in options.levels:
                total = options.total or concurrency
                results.append(await driver.run_level(Level(concurrency, total, options.ramp)))
    finally:
        await emulators.stop()
    levels = [r.report for r in results]
    notes = caveats(levels)
    report = build_report(levels, report_config(options, audio), caveats=notes)
    print("\n" + format_tables(levels), file=out)
    for note in notes:
        print(f"  caveat: {note}", file=out)
    return finish_outputs(report, results, options.out, options.plot, out)


def finish_outputs(
    report: dict[str, Any],
    results: list[LevelResult],
    out_path: Path | None,
    plot_path: Path | None,
    out: TextIO,
) -> int:
    if out_path is not None:
        write_report(report, out_path)
        print(f"\nReport written to {out_path}", file=out)
    if plot_path is not None:
        try:
            plot_latency([(r.report["concurrency"], r.samples) for r in results], plot_path)
        except PlotUnavailable as exc:
            print(f"\n{exc}", file=sys.stderr)
            return 2
        print(f"Plot written to {plot_path}", file=out)
    return 0
