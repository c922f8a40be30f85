"""The tool dispatch table: name → (argument schema, async handler, timeout).

Each tool declares its arguments as a pydantic model; the JSON schema offered to the model is
generated from it and the model's arguments are validated against it. `dispatch` never
raises: bad JSON, bad arguments, unknown tools, timeouts and handler failures all become an
`{"error": ...}` output the agent can relay.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from loguru import Logger

    from caller_engine.calls.transfer import TransferTarget

ToolOutput = dict[str, Any]


@dataclass
class ToolContext:
    """What a tool may know about the call it runs in."""

    callback_id: str
    call_sid: str | None
    callee: str
    log: Logger
    end_call: Callable[[], Awaitable[None]] | None = None
    # Hand the call to a person: (target, reason, summary) → the tool's output.
    transfer: Callable[[TransferTarget, str, str], Awaitable[dict[str, Any]]] | None = None
    # Lists the callee on the do-not-call list (argument: the reason) and ends the call
    # after the agent's next reply.
    opt_out: Callable[[str], Awaitable[None]] | None = None
    # Per-call scratch space for tools that must be idempotent within a call.
    memo: dict[str, Any] = field(default_factory=dict)


ToolHandler = Callable[[Any, ToolContext], Awaitable[ToolOutput]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args: type[BaseModel]
    handler: ToolHandler
    timeout: float = 10.0

    def schema(self) -> dict[str, Any]:
        """The function definition in the OpenAI Realtime `session.tools` shape. Built once
        per tool (pydantic's schema generation costs about a millisecond); treat as read-only."""
        key = (self.name, self.description, self.args)
        schema = _SCHEMAS.get(key)
        if schema is None:
            schema = _SCHEMAS[key] = {
                "type": "function",
                "name": self.name,
                "description": self.description,
                "parameters": _strip_titles(self.args.model_json_schema()),
            }
        return schema


_SCHEMAS: dict[tuple[str, str, type[BaseModel]], dict[str, Any]] = {}


@dataclass(frozen=True)
class ToolOutcome:
    name: str
    arguments: dict[str, Any] | str
    output: ToolOutput
    ok: bool
    duration_ms: float


def _strip_titles(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _strip_titles(v) for k, v in schema.items() if k != "title"}
    if isinstance(schema, list):
        return [_strip_titles(v) for v in schema]
    return schema


def _validation_message(exc: ValidationError) -> str:
    parts = [
        f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
    ]
    return "invalid arguments: " + "; ".join(parts)


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name!r} is registered twice")
        self._tools[tool.name] = tool

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def select(self, names: Iterable[str] | None) -> list[Tool]:
        """The enabled tools, narrowed to a per-call subset when one is given."""
        if names is None:
            return list(self._tools.values())
        wanted = set(names)
        return [t for n, t in self._tools.items() if n in wanted]

    async def dispatch(self, name: str, arguments: str, ctx: ToolContext) -> ToolOutcome:
        started = time.perf_counter()
        parsed: dict[str, Any] | str = arguments
        output, ok = await self._run(name, arguments, ctx)
        try:
            loaded = orjson.loads(arguments or "{}")
            if isinstance(loaded, dict):
                parsed = loaded
        except orjson.JSONDecodeError:
            pass
        duration_ms = (time.perf_counter() - started) * 1000
        log = ctx.log.bind(tool=name, duration_ms=round(duration_ms, 1), ok=ok)
        if ok:
            log.info("tool {} ok in {:.0f} ms", name, duration_ms)
        else:
            log.warning("tool {} failed in {:.0f} ms: {}", name, duration_ms, output.get("error"))
        return ToolOutcome(name, parsed, output, ok, duration_ms)

    async def _run(self, name: str, arguments: str, ctx: ToolContext) -> tuple[ToolOutput, bool]:
        tool = self._tools.get(name)
        if tool is None:
            return {"error": f"unknown tool '{name}'"}, False
        try:
            raw = orjson.loads(arguments or "{}")
        except orjson.JSONDecodeError:
            return {"error": "arguments are not valid JSON"}, False
        try:
            args = tool.args.model_validate(raw)
        except ValidationError as exc:
            return {"error": _validation_message(exc)}, False
        try:
            output = await asyncio.wait_for(tool.handler(args, ctx), tool.timeout)
        except TimeoutError:
            return {"error": f"{name} timed out after {tool.timeout:g} s; please try again"}, False
        except Exception as exc:
            ctx.log.exception("tool {} raised", name)
            return {"error": f"{name} failed: {type(exc).__name__}"}, False
        return output, "error" not in output
