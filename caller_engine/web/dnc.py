"""The do-not-call list: PUT, DELETE and GET /dnc/{number}, GET /dnc (API key)."""

from __future__ import annotations

import re

import orjson
from aiohttp import web
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from caller_engine.calls.models import CALLBACK_ID_PATTERN, E164_PATTERN, DncEntry
from caller_engine.calls.views import decode_number_cursor, dnc_json, encode_number_cursor
from caller_engine.web.errors import json_error, json_response
from caller_engine.web.security import api_key_error
from caller_engine.web.state import SERVICES

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
_E164 = re.compile(E164_PATTERN)


class DncListing(BaseModel):
    """The optional body of PUT /dnc/{number}."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    reason: str | None = Field(None, max_length=500)
    callback_id: str | None = Field(None, alias="callbackId", pattern=CALLBACK_ID_PATTERN)


def _number(request: web.Request) -> str | web.Response:
    number = request.match_info["number"].strip()
    if not _E164.match(number):
        return json_error(
            400, "invalid_number", "the number must be E.164, e.g. +15551234567 (%2B for +)"
        )
    return number


def masked(number: str) -> str:
    return number[:2] + "…" + number[-4:]


async def put_number(request: web.Request) -> web.Response:
    if (denied := api_key_error(request)) is not None:
        return denied
    number = _number(request)
    if isinstance(number, web.Response):
        return number
    raw = await request.read()
    listing = DncListing()
    if raw.strip():
        if request.content_type != "application/json":
            return json_error(415, "unsupported_media_type", "send the body as application/json")
        try:
            listing = DncListing.model_validate(orjson.loads(raw))
        except orjson.JSONDecodeError as exc:
            return json_error(400, "invalid_json", f"body is not valid JSON: {exc}")
        except ValidationError as exc:
            fields = [
                {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                for e in exc.errors()
            ]
            return json_error(422, "invalid_request", "invalid request body", fields=fields)
    entry = DncEntry(
        number=number, source="api", reason=listing.reason, callback_id=listing.callback_id
    )
    kept, created = await request.app[SERVICES].store.dnc_add(entry)
    if created:
        logger.bind(callbackId=listing.callback_id).info(
            "do-not-call: {} listed (api)", masked(number)
        )
    return json_response(dnc_json(kept), 201 if created else 200)


async def delete_number(request: web.Request) -> web.Response:
    if (denied := api_key_error(request)) is not None:
        return denied
    number = _number(request)
    if isinstance(number, web.Response):
        return number
    if not await request.app[SERVICES].store.dnc_remove(number):
        return json_error(404, "not_found", "this number is not on the do-not-call list")
    logger.info("do-not-call: {} removed (api)", masked(number))
    return web.Response(status=204)


async def get_number(request: web.Request) -> web.Response:
    if (denied := api_key_error(request)) is not None:
        return denied
    number = _number(request)
    if isinstance(number, web.Response):
        return number
    entry = await request.app[SERVICES].store.dnc_get(number)
    if entry is None:
        return json_error(404, "not_found", "this number is not on the do-not-call list")
    return json_response(dnc_json(entry))


async def list_numbers(request: web.Request) -> web.Response:
    """In number order, `limit` (1-500, default 100) at a time; follow `nextCursor`."""
    if (denied := api_key_error(request)) is not None:
        return denied
    query = request.query
    fields: list[dict[str, str]] = []
    limit = DEFAULT_LIMIT
    if "limit" in query:
        raw = query["limit"]
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            fields.append({"field": "limit", "message": f"integer from 1 to {MAX_LIMIT}"})
        else:
            limit = int(raw)
    after = None
    if "cursor" in query and (after := decode_number_cursor(query["cursor"])) is None:
        fields.append({"field": "cursor", "message": "not a cursor from a previous page"})
    if fields:
        return json_error(400, "invalid_query", "invalid query parameters", fields=fields)
    entries = await request.app[SERVICES].store.dnc_list(after=after, limit=limit)
    next_cursor = encode_number_cursor(entries[-1].number) if len(entries) == limit else None
    return json_response({"entries": [dnc_json(e) for e in entries], "nextCursor": next_cursor})
