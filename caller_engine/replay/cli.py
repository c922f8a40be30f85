"""The `replay` and `bench` subcommands."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from caller_engine.replay.defaults import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, PROVIDERS

REPLAY_EPILOG = """\
Local server with the bundled model emulator (markers on every frame):
  1. caller-engine replay --calls 20 --duration 30      (prints the server's environment)
  2. start `caller-engine serve` with that environment (replay waits for /health)
  For a local URL the server's pid is found by its port (CPU and RSS per call);
  otherwise give --server-pid. The bundled emulators listen on 18180-18182 by default.

Remote server (staging): give its URL, the API key it expects and its Twilio auth token,
and make replay's emulators reachable from it:
  caller-engine replay --url https://staging.example.com --api-key KEY --auth-token TOKEN \\
      --account-sid AC... --emulator-host 0.0.0.0 --advertise-host replay.example.com
  The staging server must use TWILIO_API_BASE_URL (and, for markers, OPENAI_REALTIME_URL and
  OPENAI_BASE_URL) from the printed environment, so that no real call is placed; with
  --model external it keeps its real model and replay reports first-audio and turn latency.
"""


def _levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("give numbers of calls such as 1,50,100") from None
    if not levels or any(level < 1 for level in levels):
        raise argparse.ArgumentTypeError("levels must be positive")
    return levels


def _providers(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in PROVIDERS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"give providers among {', '.join(PROVIDERS)}")
    return list(dict.fromkeys(names))


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _plot_ok(path: Path | None) -> bool:
    from caller_engine.replay.plot import MISSING, available

    if path is not None and not available():
        print(f"caller-engine: {MISSING}", file=sys.stderr)
        return False
    return True


def _replay(args: argparse.Namespace) -> int:
    from caller_engine.replay.captures import CaptureError
    from caller_engine.replay.driver import ReplayError
    from caller_engine.replay.run import ReplayOptions, run_replay

    if not _plot_ok(args.plot):
        return 2
    options = ReplayOptions(
        url=args.url.rstrip("/"),
        levels=args.calls,
        total=args.total,
        ramp=args.ramp,
        duration=args.duration,
        captures=args.capture or [],
        model=args.model,
        api_key=args.api_key,
        auth_token=args.auth_token,
        account_sid=args.account_sid,
        server_pid=args.server_pid,
        wait=args.wait,
        out=args.out,
        plot=args.plot,
        emulator_host=args.emulator_host,
        advertise_host=args.advertise_host,
        emulator_port=args.emulator_port,
        provider=args.provider,
    )
    try:
        return asyncio.run(run_replay(options))
    except (ReplayError, CaptureError, OSError) as exc:
        print(f"caller-engine replay: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _bench(args: argparse.Namespace) -> int:
    from caller_engine.replay.bench import BenchOptions, driver_refusal, run_bench

    if not _plot_ok(args.plot):
        return 2
    options = BenchOptions(
        levels=tuple(args.levels),
        duration=args.duration,
        ramp=args.ramp,
        out=args.out,
        plot=args.plot,
        pin=not args.no_pin,
        tool=not args.no_tool,
        profile=args.profile,
        cost_calls=args.cost_calls,
        cost_burst=args.cost_burst,
        cycle=args.cycle,
        record=not args.no_record,
        floor=not args.no_floor,
        providers=tuple(args.provider),
        driver=args.driver,
    )
    if (refusal := driver_refusal(options)) is not None:
        print(f"caller-engine bench: {refusal}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run_bench(options))
    except KeyboardInterrupt:
        return 130


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    replay = sub.add_parser(
        "replay",
        help="drive concurrent emulated calls against a running server and measure latency",
        description="Load replay: N concurrent calls entered the way Twilio enters them "
        "(signed TwiML fetch, then the signed media stream), with per-frame markers when the "
        "bundled model emulator is used.",
        epilog=REPLAY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay.add_argument("--url", default="http://127.0.0.1:5050", help="server base URL")
    replay.add_argument(
        "--calls",
        type=_levels,
        default=[10],
        metavar="N[,N...]",
        help="concurrent calls; a list runs one level after another (default 10)",
    )
    replay.add_argument("--total", type=int, help="calls per level (default: = concurrency)")
    replay.add_argument("--ramp", type=_positive, default=10.0, help="calls started per second")
    replay.add_argument(
        "--duration", type=_positive, default=30.0, help="seconds per call (captures: at most)"
    )
    replay.add_argument(
        "--capture",
        type=Path,
        action="append",
        metavar="PATH",
        help="capture file or directory (MEDIA_CAPTURE_DIR); repeatable; calls take them in turn",
    )
    replay.add_argument(
        "--model",
        choices=("emulator", "external"),
        default="emulator",
        help="emulator: replay runs the model emulator (markers); external: the server's own",
    )
    replay.add_argument(
        "--provider",
        choices=PROVIDERS,
        default="openai",
        help="the realtime provider the bundled model emulator speaks (default openai)",
    )
    replay.add_argument(
        "--api-key", default=os.environ.get("API_KEY"), help="the server's API_KEY ($API_KEY)"
    )
    replay.add_argument(
        "--auth-token",
        default=os.environ.get("TWILIO_AUTH_TOKEN", DEFAULT_AUTH_TOKEN),
        help="the server's TWILIO_AUTH_TOKEN, to sign as Twilio ($TWILIO_AUTH_TOKEN)",
    )
    replay.add_argument(
        "--account-sid",
        default=os.environ.get("TWILIO_ACCOUNT_SID", DEFAULT_ACCOUNT_SID),
        help="the server's TWILIO_ACCOUNT_SID ($TWILIO_ACCOUNT_SID)",
    )
    replay.add_argument(
        "--server-pid",
        type=int,
        help="server pid, for CPU %% and RSS per call (found by port for a local URL)",
    )
    replay.add_argument("--wait", type=_positive, default=120.0, help="seconds to wait for /health")
    replay.add_argument("--out", type=Path, help="write the JSON report here")
    replay.add_argument("--plot", type=Path, help="write latency distributions here (PNG)")
    replay.add_argument("--emulator-host", default="127.0.0.1", help="emulators listen here")
    replay.add_argument("--advertise-host", help="host name the server uses to reach them")
    replay.add_argument(
        "--emulator-port",
        type=int,
        default=18180,
        help="first of 3 ports: model, Twilio REST, chat (0: any free port)",
    )
    replay.set_defaults(func=_replay)

    bench = sub.add_parser(
        "bench",
        help="benchmark a local server with the model emulator at 1, 50, 100 and 200 calls",
        description="Starts `caller-engine serve` (pinned to one CPU when possible), replays "
        "calls at each level, writes bench/results.json and prints the table. Never fails "
        "on timing.",
    )
    bench.add_argument(
        "--levels",
        type=_levels,
        default=[1, 50, 100, 200],
        metavar="N[,N...]",
        help="concurrent calls per level (default 1,50,100,200)",
    )
    bench.add_argument("--duration", type=_positive, default=20.0, help="seconds per call")
    bench.add_argument("--ramp", type=_positive, default=20.0, help="calls started per second")
    bench.add_argument(
        "--out", type=Path, default=Path("bench/results.json"), help="the JSON results"
    )
    bench.add_argument("--plot", type=Path, help="also write latency distributions (PNG)")
    bench.add_argument("--no-pin", action="store_true", help="do not pin the server to a CPU")
    bench.add_argument(
        "--no-tool", action="store_true", help="calls without the send_sms tool call"
    )
    bench.add_argument(
        "--provider",
        type=_providers,
        default=["openai"],
        metavar="NAME[,NAME...]",
        help="realtime providers, each against its emulator, CPU per call side by side "
        "(e.g. openai,gemini; default openai)",
    )
    bench.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record the server with py-spy (installed separately): DIR/server-<level>.txt",
    )
    bench.add_argument(
        "--cycle",
        choices=("barge", "turns"),
        default="barge",
        help="barge: greeting, barge-in, reply, follow-up (5.5 s); turns: a 2 s greeting, then "
        "a caller turn every 4 s from 3 s answered by 2 s of agent audio",
    )
    bench.add_argument(
        "--no-record",
        action="store_true",
        help="calls without /call/initiate: TwiML and stream only, no call record",
    )
    bench.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the minimal pass-through bridge (bench/floor_bridge.py) run beside each level",
    )
    bench.add_argument(
        "--cost-calls",
        type=int,
        default=20,
        metavar="N",
        help="calls made one at a time to measure setup / teardown CPU (default 20; 0: skip)",
    )
    bench.add_argument(
        "--cost-burst",
        type=int,
        default=10,
        metavar="N",
        help="the same number of calls again, N at a time: CPU per call on a busy server "
        "(default 10; 1: skip)",
    )
    bench.add_argument(
        "--driver",
        choices=("python", "node"),
        default="python",
        help="load driver and emulators: python (this process) or node (bench/loadgen/, a "
        "Node.js process of its own; turn cycle without the tool only)",
    )
    bench.set_defaults(func=_bench)
