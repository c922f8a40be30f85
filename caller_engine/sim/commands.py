"""`caller-engine simulate`: the embedded default, a full call with no credentials."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any


def _simulate(args: argparse.Namespace) -> int:
    from caller_engine.logging import setup_logging
    from caller_engine.sim.run import simulate
    from caller_engine.sim.scenarios import scenarios

    found = scenarios()
    if args.list:
        for scenario in found.values():
            print(f"{scenario.name:<11} {scenario.description}")
        return 0
    if args.scenario not in found:
        print(
            f"caller-engine simulate: unknown scenario {args.scenario!r}; see --list",
            file=sys.stderr,
        )
        return 2
    if args.realtime_url and not args.openai_key:
        print(
            "caller-engine simulate: --realtime-url needs --openai-key (or OPENAI_API_KEY)",
            file=sys.stderr,
        )
        return 2
    setup_logging("development", "DEBUG" if args.verbose else "ERROR")
    return asyncio.run(
        simulate(
            args.scenario,
            speed=args.speed,
            as_json=args.json,
            realtime_url=args.realtime_url,
            openai_key=args.openai_key,
            provider=args.provider,
        )
    )


def add_commands(sub: Any) -> None:
    parser = sub.add_parser(
        "simulate",
        help="place one emulated call end to end on loopback (no credentials needed)",
        description=(
            "Start the real server with emulators of Twilio (REST, phone network, media "
            "streams), OpenAI (Realtime, Chat Completions), Google and the orchestrator, "
            "place a call through POST /call/initiate and follow it live. Exits 1 when the "
            "scenario did not turn out as it should."
        ),
    )
    parser.add_argument("scenario", nargs="?", default="booking", help="default: booking")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--json", action="store_true", help="print the call result as JSON")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="play the phone line N times faster (default 1)"
    )
    parser.add_argument(
        "--realtime-url",
        default=os.environ.get("SIMULATE_REALTIME_URL"),
        help="talk to a real Realtime endpoint (e.g. wss://api.openai.com/v1/realtime) "
        "instead of the model emulator; env SIMULATE_REALTIME_URL",
    )
    parser.add_argument(
        "--openai-key",
        default=os.environ.get("OPENAI_API_KEY"),
        help="key for --realtime-url (env OPENAI_API_KEY)",
    )
    parser.add_argument(
        "--provider",
        choices=("openai", "gemini", "elevenlabs", "nova_sonic"),
        default="openai",
        help="the realtime provider whose emulator the call talks to (default openai)",
    )
    parser.add_argument("--verbose", action="store_true", help="show the server's logs")
    parser.set_defaults(func=_simulate)
