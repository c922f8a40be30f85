"""`caller-engine elevenlabs tools`: our enabled tools as the agent's client tools.

Without `--apply` it prints the definitions (JSON) to add to the agent. With `--agent-id ID
--apply` it creates or updates each one as a workspace client tool (matched by name) through
ElevenLabs' REST API and makes the agent reference them. ELEVENLABS_API_KEY is needed for
`--apply`; ELEVENLABS_API_URL picks the host (a residency host, or an emulator).

What the command needs is imported when it runs: building the parser (as `serve` does) must
not load the Google client or the tool modules.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

import orjson

from caller_engine.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from caller_engine.tools.registry import Tool


def _print(data: Any) -> None:
    print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


async def _enabled_tools(settings: Settings) -> list[Tool]:
    from caller_engine.telephony.rest import TwilioGateway
    from caller_engine.tools.google_client import GoogleApis
    from caller_engine.tools.transfer import transfer_tool
    from caller_engine.web.app import build_tools

    gateway = TwilioGateway(
        settings.twilio_account_sid,
        settings.twilio_auth_token,
        settings.twilio_phone_number,
        base_url=settings.twilio_api_base_url,
    )
    google = None
    if settings.enable_calendar_tools or settings.enable_email_tools:
        google = GoogleApis.from_settings(settings)
    try:
        tools = list(build_tools(settings, gateway, google))
        targets = settings.configured_transfer_targets
        if targets:  # offered per call; the agent carries it with every configured target
            tools.append(transfer_tool(targets))
        return tools
    finally:
        await gateway.close()
        if google is not None:
            google.close()


async def _tools(args: argparse.Namespace, settings: Settings) -> int:
    import aiohttp

    from caller_engine.realtime.elevenlabs.agent_tools import (
        SYSTEM_TOOLS,
        AgentApiError,
        AgentToolsClient,
        SchemaError,
        client_tools,
    )

    try:
        configs = client_tools(await _enabled_tools(settings))
    except SchemaError as exc:
        print(f"caller-engine: a tool cannot be described to ElevenLabs: {exc}", file=sys.stderr)
        return 1
    if not args.apply:
        _print({"tools": [{"tool_config": c} for c in configs]})
        print(
            f"(not exported: {', '.join(sorted(SYSTEM_TOOLS))}: enable the agent's own system "
            "tool of that name)",
            file=sys.stderr,
        )
        return 0
    if not args.agent_id:
        print("caller-engine: --apply needs --agent-id", file=sys.stderr)
        return 2
    if not settings.elevenlabs_api_key:
        print("caller-engine: --apply needs ELEVENLABS_API_KEY", file=sys.stderr)
        return 2
    async with aiohttp.ClientSession() as http:
        client = AgentToolsClient(http, settings.elevenlabs_api_url, settings.elevenlabs_api_key)
        try:
            report = await client.apply(args.agent_id, configs)
        except AgentApiError as exc:
            print(f"caller-engine: {exc}", file=sys.stderr)
            return 1
    _print({"agentId": args.agent_id, **report.as_dict()})
    return 0


def _tools_command(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"caller-engine: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_tools(args, settings))
    except ConfigError as exc:
        print(f"caller-engine: {exc}", file=sys.stderr)
        return 2


def add_commands(sub: Any) -> None:
    elevenlabs = sub.add_parser(
        "elevenlabs",
        help="ElevenLabs Agents: put our tools on an agent",
        description="Helpers for REALTIME_PROVIDER=elevenlabs.",
    )
    actions = elevenlabs.add_subparsers(dest="action", metavar="ACTION", required=True)
    tools = actions.add_parser(
        "tools",
        help="print our enabled tools as client-tool definitions, or apply them to an agent",
        description="Print every enabled tool (from the environment and .env) as an ElevenLabs "
        "client-tool definition; with --agent-id and --apply, create or update them in the "
        "workspace (matched by name) and make the agent use them.",
    )
    tools.add_argument("--agent-id", help="the agent to apply the tools to")
    tools.add_argument("--apply", action="store_true", help="create/update through the REST API")
    tools.set_defaults(func=_tools_command)
