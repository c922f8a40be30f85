"""GET /calls and GET /calls/{callbackId}: the call records, for the orchestrator."""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError

from caller_engine.calls.views import decode_cursor, encode_cursor, record_json, record_summary
from caller_engine.results.worker import DeliveryWorker
from caller_engine.web.errors import json_error, json_response
from caller_engine.web.schemas import CallsQuery
from caller_engine.web.security import api_key_error
from caller_engine.web.state import SERVICES

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


# One sentence per query parameter, whatever pydantic found wrong with it.
QUERY_PROBLEMS = {
    "since": "ISO 8601 time with offset, e.g. 2025-01-31T09:00:00Z",
    "limit": f"integer from 1 to {MAX_LIMIT}",
    "cursor": "not a cursor from a previous page",
    "status": "comma-separated call statuses",
}


def _query_errors(exc: ValidationError) -> list[dict[str, str]]:
    named = {str(e["loc"][0]) if e["loc"] else "" for e in exc.errors()}
    return [{"field": f, "message": QUERY_PROBLEMS.get(f, "invalid")} for f in sorted(named)]


async def list_calls(request: web.Request) -> web.Response:
    """Most recent first. `status` (comma-separated), `since` (ISO 8601 with offset),
    `limit` (1-200, default 50); follow `nextCursor` with `cursor=` for the next page."""
    if (denied := api_key_error(request)) is not None:
        return denied
    fields: list[dict[str, str]] = []
    query: CallsQuery | None = None
    try:
        query = CallsQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        fields = _query_errors(exc)
    cursor = request.query.get("cursor")
    before = decode_cursor(cursor) if cursor is not None else None
    if cursor is not None and before is None and not any(f["field"] == "cursor" for f in fields):
        fields.append({"field": "cursor", "message": QUERY_PROBLEMS["cursor"]})
    if fields or query is None:
        return json_error(400, "invalid_query", "invalid query parameters", fields=fields)
    statuses = [s.strip() for s in (query.status or "").split(",") if s.strip()]
    records = await request.app[SERVICES].store.list_calls(
        statuses=statuses, since=query.since, before=before, limit=query.limit
    )
    next_cursor = encode_cursor(records[-1]) if len(records) == query.limit else None
    return json_response({"calls": [record_summary(r) for r in records], "nextCursor": next_cursor})
