"""GET /calls and GET /calls/{callbackId}: the call records, for the orchestrator."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from caller_engine.calls.views import decode_cursor, encode_cursor, record_json, record_summary
from caller_engine.results.worker import DeliveryWorker
from caller_engine.web.errors import json_error, json_response
from caller_engine.web.security import api_key_error
from caller_engine.web.state import SERVICES

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

# The result delivery worker of this instance (absent when the store has no outbox).
DELIVERY_WORKER = web.AppKey("delivery_worker", DeliveryWorker)


async def get_call(request: web.Request) -> web.Response:
    if (denied := api_key_error(request)) is not None:
        return denied
    callback_id = request.match_info["callbackId"]
    record = await request.app[SERVICES].store.get(callback_id)
    if record is None:
        return json_error(404, "not_found", f"no call with callbackId {callback_id}")
    return json_response(record_json(record))


def _since(value: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


async def list_calls(request: web.Request) -> web.Response:
    """Most recent first. `status` (comma-separated), `since` (ISO 8601 with offset),
    `limit` (1-200, default 50); follow `nextCursor` with `cursor=` for the next page."""
    if (denied := api_key_error(request)) is not None:
        return denied
    query = request.query
    fields: list[dict[str, str]] = []
    statuses = [s.strip() for s in query.get("status", "").split(",") if s.strip()]
    since = None
    if "since" in query and (since := _since(query["since"])) is None:
        fields.append({"field": "since", "message": "ISO 8601 time with offset, e.g. …Z"})
    limit = DEFAULT_LIMIT
    if "limit" in query:
        raw = query["limit"]
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            fields.append({"field": "limit", "message": f"integer from 1 to {MAX_LIMIT}"})
        else:
            limit = int(raw)
    before = None
    if "cursor" in query and (before := decode_cursor(query["cursor"])) is None:
        fields.append({"field": "cursor", "message": "not a cursor from a previous page"})
    if fields:
        return json_error(400, "invalid_query", "invalid query parameters", fields=fields)
    records = await request.app[SERVICES].store.list_calls(
        statuses=statuses, since=since, before=before, limit=limit
    )
    next_cursor = encode_cursor(records[-1]) if len(records) == limit else None
    return json_response({"calls": [record_summary(r) for r in records], "nextCursor": next_cursor})
