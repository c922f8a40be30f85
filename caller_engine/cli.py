"""The `caller-engine` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from caller_engine.config import ConfigError, load_settings
from caller_engine.logging import setup_logging
from caller_engine.loop import run_loop


def _serve(args: argparse.Namespace) -> int:
    from caller_engine.server import serve

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"caller-engine: {exc}", file=sys.stderr)
        print("See .env.example for every variable.", file=sys.stderr)
        return 2
    setup_logging(settings.environment, settings.log_level)
    try:
        run_loop(serve(settings))
    except ConfigError as exc:
        print(f"caller-engine: {exc}", file=sys.stderr)
        return 2
    return 0


def _openapi(args: argparse.Namespace) -> int:
    from caller_engine.web.openapi import render

    document = render()
    if args.output:
        with open(args.output, "wb") as out:
            out.write(document)
    else:
        sys.stdout.buffer.write(document)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caller-engine",
        description="Outbound phone calls through Twilio, spoken by a realtime voice model.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="run the HTTP/WebSocket server (configuration from the environment and .env)",
        description="Run the server. Every setting comes from the environment or .env; "
        "see .env.example. SIGTERM/SIGINT drain active calls before exiting.",
    )
    serve.set_defaults(func=_serve)
    openapi = sub.add_parser(
        "openapi",
        help="print the OpenAPI 3.1 document of the orchestrator API",
        description="Print (or write) the OpenAPI document generated from the API's models; "
        "the server also serves it at GET /openapi.json.",
    )
    openapi.add_argument("--output", metavar="PATH", help="write it here instead of stdout")
    openapi.set_defaults(func=_openapi)
    from caller_engine.calls.commands import add_commands

    add_commands(sub)
    from caller_engine.sim.commands import add_commands as add_sim_commands

    add_sim_commands(sub)
    from caller_engine.replay.cli import add_commands as add_replay_commands

    add_replay_commands(sub)
    from caller_engine.realtime.elevenlabs.commands import add_commands as add_elevenlabs_commands

    add_elevenlabs_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
