"""Maintenance commands: `caller-engine db upgrade|status` and `deliveries retry`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson

from caller_engine.calls.migrations import LATEST, current_version, upgrade
from caller_engine.calls.sql_engine import open_database
from caller_engine.calls.sql_store import SqlCallStore
from caller_engine.calls.views import delivery_json
from caller_engine.config import ConfigError, DatabaseSettings, load_settings
from caller_engine.results.outbox import NoResult, NoUrl
from caller_engine.results.worker import DeliveryConfig, DeliveryWorker, instance_id


def _print(data: Any) -> None:
    print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def _database_url(args: argparse.Namespace) -> str:
    return str(args.database_url or DatabaseSettings().database_url)


async def _db(url: str, apply: bool) -> int:
    db = open_database(url)
    try:
        await db.prepare()
        version = await (upgrade(db) if apply else current_version(db))
    finally:
        await db.dispose()
    _print({"version": version, "latest": LATEST, "upToDate": version >= LATEST})
    return 0 if version >= LATEST else 1


def _db_command(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_db(_database_url(args), args.action == "upgrade"))
    except Exception as exc:
        print(f"caller-engine: database {args.action} failed: {exc}", file=sys.stderr)
        return 1


async def _retry(args: argparse.Namespace) -> int:
    settings = load_settings()
    store = await SqlCallStore.open(settings.database_url)
    try:
        try:
            state = await store.outbox.requeue(
                args.callback_id, settings.result_webhook_url, url=args.url
            )
        except NoResult:
            print(f"caller-engine: call {args.callback_id} has no result yet", file=sys.stderr)
            return 1
        except NoUrl:
            print(
                "caller-engine: no URL to deliver to (RESULT_WEBHOOK_URL, the call's "
                "resultWebhookUrl, or --url)",
                file=sys.stderr,
            )
            return 1
        if not args.queue_only:
            worker = DeliveryWorker(
                store.outbox, DeliveryConfig.from_settings(settings), owner="cli:" + instance_id()
            )
            try:
                await worker.run_once(args.callback_id)
            finally:
                await worker.stop()
            record = await store.get(args.callback_id)
            state = record.delivery if record and record.delivery else state
        _print({"callbackId": args.callback_id, "delivery": delivery_json(state)})
        return 0 if args.queue_only or state.state == "delivered" else 3
    finally:
        await store.close()


def _retry_command(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_retry(args))
    except ConfigError as exc:
        print(f"caller-engine: {exc}", file=sys.stderr)
        return 2


def add_commands(sub: Any) -> None:
    """Register the maintenance commands on the CLI's subparsers."""
    db = sub.add_parser(
        "db",
        help="database schema: upgrade to the latest version, or show the version",
        description="Apply pending schema migrations to DATABASE_URL (the server also does "
        "this at start), or show the current version. Only DATABASE_URL is read.",
    )
    db.add_argument("action", choices=["upgrade", "status"])
    db.add_argument("--database-url", help="instead of DATABASE_URL")
    db.set_defaults(func=_db_command)

    deliveries = sub.add_parser(
        "deliveries",
        help="result webhooks: resend a call's result",
        description="Queue a call's result again with a fresh retry period and try it now "
        "(exit 0 when delivered, 3 when it stays queued for the server to retry).",
    )
    actions = deliveries.add_subparsers(dest="action", metavar="ACTION", required=True)
    retry = actions.add_parser("retry", help="resend the result of one call")
    retry.add_argument("callback_id", metavar="CALLBACK_ID")
    retry.add_argument("--url", help="deliver to this URL instead")
    retry.add_argument(
        "--queue-only", action="store_true", help="only queue it; let a server send it"
    )
    retry.set_defaults(func=_retry_command)
