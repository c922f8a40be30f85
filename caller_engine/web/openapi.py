"""The OpenAPI 3.1 document of the orchestrator-facing API, generated from its models.

`OPERATIONS` is the registry: one entry per endpoint, naming the pydantic models of its
body, query and path parameters and of each answer. A new endpoint adds an `Operation`
here (tests check that every orchestrator route has one and that `openapi.json` is
current; regenerate it with `caller-engine openapi --output openapi.json`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, Literal

import orjson
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from caller_engine.calls.models import InitiateRequest
from caller_engine.web.dnc import DncListing
from caller_engine.web.schemas import (
    CallList,
    CallPath,
    CallsQuery,
    CallView,
    DncEntryView,
    DncList,
    DncPath,
    DncQuery,
    ErrorAnswer,
    HealthAnswer,
    InitiateAnswer,
    OpenApiDocument,
    ReadyAnswer,
    RefusalAnswer,
)

JSON = "application/json"
PROMETHEUS = "text/plain"
REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Answer:
    description: str
    model: type[BaseModel] | None = None
    media_type: str | None = JSON  # None: no body


@dataclass(frozen=True)
class Operation:
    method: Literal["get", "post", "put", "patch", "delete"]
    path: str
    operation_id: str
    summary: str
    answers: Mapping[int, Answer]
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    path_params: type[BaseModel] | None = None
    secured: bool = True
    tags: tuple[str, ...] = ()
    description: str = ""


def _error(description: str) -> Answer:
    return Answer(description, ErrorAnswer)


UNAUTHORIZED = _error("missing or invalid API key")
BAD_NUMBER = _error("the number is not E.164")
UNLISTED = _error("the number is not on the do-not-call list")
NO_DATABASE = _error("the database is unavailable; retry later")

OPERATIONS: list[Operation] = [
    Operation(
        "post",
        "/call/initiate",
        "initiateCall",
        "Place an outbound call",
        body=InitiateRequest,
        tags=("calls",),
        description="Dials once per callbackId: a repeat with the same callbackId and number "
        "answers the existing call with duplicate=true.",
        answers={
            200: Answer("the call was placed (or already was)", InitiateAnswer),
            400: _error("the body is not JSON, or Twilio refused the number"),
            401: UNAUTHORIZED,
            403: Answer("do_not_call: the number is on the do-not-call list", RefusalAnswer),
            409: _error("the callbackId belongs to a call to another number"),
            413: _error("the body is too large"),
            415: _error("the body is not application/json"),
            422: Answer(
                "the body does not validate (error.fields names each problem), or "
                "outside_calling_hours: the callee's local time is outside calling hours "
                "(error.nextAllowedAt says when they open)",
                RefusalAnswer,
            ),
            429: Answer(
                "frequency_cap: the number was called too often in the window "
                "(error.nextAllowedAt and Retry-After say when a call is allowed)",
                RefusalAnswer,
            ),
            502: _error("Twilio failed or could not be reached"),
            503: _error("draining, or the database is unavailable; retry later"),
        },
    ),
    Operation(
        "get",
        "/calls",
        "listCalls",
        "List recent calls, most recent first",
        query=CallsQuery,
        tags=("calls",),
        answers={
            200: Answer("one page of calls", CallList),
            400: _error("a query parameter is invalid; error.fields names each"),
            401: UNAUTHORIZED,
            503: _error("the database is unavailable; retry later"),
        },
    ),
    Operation(
        "get",
        "/calls/{callbackId}",
        "getCall",
        "Everything recorded about one call",
        path_params=CallPath,
        tags=("calls",),
        answers={
            200: Answer("the call record", CallView),
            401: UNAUTHORIZED,
            404: _error("no call with this callbackId"),
            503: _error("the database is unavailable; retry later"),
        },
    ),
    Operation(
        "put",
        "/dnc/{number}",
        "addDoNotCall",
        "Put a number on the do-not-call list",
        path_params=DncPath,
        body=DncListing,
        body_required=False,
        tags=("do-not-call",),
        description="A number already listed keeps its first entry; a reason given here "
        "replaces the reason of an API listing.",
        answers={
            200: Answer("already listed; the entry as kept", DncEntryView),
            201: Answer("listed", DncEntryView),
            400: _error("the number is not E.164, or the body is not JSON"),
            401: UNAUTHORIZED,
            413: _error("the body is too large"),
            415: _error("the body is not application/json"),
            422: _error("the body does not validate; error.fields names each problem"),
            503: NO_DATABASE,
        },
    ),
    Operation(
        "delete",
        "/dnc/{number}",
        "removeDoNotCall",
        "Take a number off the do-not-call list",
        path_params=DncPath,
        tags=("do-not-call",),
        answers={
            204: Answer("removed", media_type=None),
            400: BAD_NUMBER,
            401: UNAUTHORIZED,
            404: UNLISTED,
            503: NO_DATABASE,
        },
    ),
    Operation(
        "get",
        "/dnc/{number}",
        "getDoNotCall",
        "One number's do-not-call entry",
        path_params=DncPath,
        tags=("do-not-call",),
        answers={
            200: Answer("the entry", DncEntryView),
            400: BAD_NUMBER,
            401: UNAUTHORIZED,
            404: UNLISTED,
            503: NO_DATABASE,
        },
    ),
    Operation(
        "get",
        "/dnc",
        "listDoNotCall",
        "The do-not-call list, in number order",
        query=DncQuery,
        tags=("do-not-call",),
        answers={
            200: Answer("one page of entries", DncList),
            400: _error("a query parameter is invalid; error.fields names each"),
            401: UNAUTHORIZED,
            503: NO_DATABASE,
        },
    ),
    Operation(
        "get",
        "/health",
        "health",
        "Liveness",
        secured=False,
        tags=("operations",),
        answers={
            200: Answer("alive (status ok, or degraded without the database)", HealthAnswer),
            503: Answer("draining before shutdown", HealthAnswer),
        },
    ),
    Operation(
        "get",
        "/ready",
        "ready",
        "Readiness: whether to send new calls to this instance",
        secured=False,
        tags=("operations",),
        answers={
            200: Answer("ready for new calls", ReadyAnswer),
            503: Answer("draining, or the database is unavailable", ReadyAnswer),
        },
    ),
    Operation(
        "get",
        "/metrics",
        "metrics",
        "Prometheus metrics (here unless METRICS_PORT serves them)",
        tags=("operations",),
        answers={
            200: Answer("Prometheus text exposition format", media_type=PROMETHEUS),
            401: UNAUTHORIZED,
        },
    ),
    Operation(
        "get",
        "/openapi.json",
        "openapi",
        "This document",
        secured=False,
        tags=("operations",),
        answers={200: Answer("the OpenAPI 3.1 document", OpenApiDocument)},
    ),
]


@dataclass
class _Schemas:
    """Collects models and generates their JSON Schemas together (shared definitions)."""

    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = field(default_factory=list)

    def ref(self, model: type[BaseModel], mode: JsonSchemaMode) -> tuple[type[BaseModel], str]:
        if (model, mode) not in self.wanted:
            self.wanted.append((model, mode))
        return model, mode

    def build(self) -> tuple[dict[Any, Any], dict[str, Any]]:
        """The $ref of each model (by (model, mode)) and the definitions they refer to."""
        keyed, top = models_json_schema(self.wanted, ref_template=REF)
        return dict(keyed), top.get("$defs", {})


def _present(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema without its null branch: an absent parameter is the null."""
    schema = {k: v for k, v in schema.items() if not (k == "default" and v is None)}
    branches = [b for b in schema.pop("anyOf", []) if b != {"type": "null"}]
    if len(branches) == 1:
        schema.update(branches[0])
    elif branches:
        schema["anyOf"] = branches
    return schema


def _parameters(model: type[BaseModel], where: str, schemas: dict[str, Any]) -> list[Any]:
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        description = prop.pop("description", None)
        prop.pop("title", None)
        param: dict[str, Any] = {"name": name, "in": where, "required": name in required}
        if where == "path":
            param["required"] = True
        if description:
            param["description"] = description
        param["schema"] = _present(prop)
        params.append(param)
    schemas.update(schema.get("$defs", {}))
    return params


def document(operations: Iterable[Operation] = OPERATIONS) -> dict[str, Any]:
    """The OpenAPI 3.1 document for `operations` (deterministic: no server URL)."""
    ops = list(operations)
    collector = _Schemas()
    for op in ops:
        if op.body is not None:
            collector.ref(op.body, "validation")
        for answer in op.answers.values():
            if answer.model is not None:
                collector.ref(answer.model, "serialization")
    keyed, components = collector.build()
    paths: dict[str, Any] = {}
    for op in ops:
        entry: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary}
        if op.description:
            entry["description"] = op.description
        if op.tags:
            entry["tags"] = list(op.tags)
        params: list[Any] = []
        if op.path_params is not None:
            params += _parameters(op.path_params, "path", components)
        if op.query is not None:
            params += _parameters(op.query, "query", components)
        if params:
            entry["parameters"] = params
        if op.body is not None:
            entry["requestBody"] = {
                "required": op.body_required,
                "content": {JSON: {"schema": keyed[(op.body, "validation")]}},
            }
        responses: dict[str, Any] = {}
        for status, answer in sorted(op.answers.items()):
            response: dict[str, Any] = {"description": answer.description}
            if answer.model is not None:
                schema = keyed[(answer.model, "serialization")]
                response["content"] = {answer.media_type: {"schema": schema}}
            elif answer.media_type is not None:
                response["content"] = {answer.media_type: {"schema": {"type": "string"}}}
            responses[str(status)] = response
        entry["responses"] = responses
        entry["security"] = [{"apiKey": []}, {"bearer": []}] if op.secured else []
        paths.setdefault(op.path, {})[op.method] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Caller Engine orchestrator API",
            "version": version("caller-engine"),
            "description": "Place outbound AI phone calls and read their records. "
            "Results are POSTed to the orchestrator's result webhook (see the README).",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def render(operations: Iterable[Operation] = OPERATIONS) -> bytes:
    """The document as the bytes of the committed openapi.json (sorted keys, indented)."""
    options = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
    return orjson.dumps(document(operations), option=options) + b"\n"
