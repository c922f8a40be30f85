"""Our dispatch table as the agent's client tools, and putting them on an agent over REST.

ElevenLabs tools live on the agent (workspace tools referenced by `tool_ids`), not in the
session, so the agent must carry a client tool for each tool we answer. Parameter schemas use
ElevenLabs' subset of JSON Schema: literal properties (`string`, `number`, `integer`,
`boolean`, optional `enum`) each with a `description`, arrays with `items`, objects with
`properties` and `required`. Constraints it cannot express (patterns, lengths) stay enforced by
our own validation and are kept in the description where the model should know them.

`end_call` is not exported: agents carry ElevenLabs' own `end_call` system tool, which ends the
conversation with close 1000 after its goodbye, and the bridge hangs up once that has played.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from caller_engine.tools.registry import Tool

SYSTEM_TOOLS = frozenset({"end_call"})
TOOLS_PATH = "/v1/convai/tools"
AGENTS_PATH = "/v1/convai/agents"
LITERAL_TYPES = frozenset({"string", "number", "integer", "boolean"})
MAX_TIMEOUT_SECS = 120
TIMEOUT_MARGIN_SECS = 2  # our own timeout answers (with an error) before the agent gives up


class SchemaError(ValueError):
    """A tool's argument schema uses something ElevenLabs cannot express."""


def _nullable_inner(prop: dict[str, Any]) -> dict[str, Any]:
    """`anyOf: [X, {type: null}]` (an optional pydantic field) → X, keeping the outer
    description."""
    options = prop.get("anyOf")
    if not isinstance(options, list):
        return prop
    inner = [o for o in options if o.get("type") != "null"]
    if len(inner) != 1:
        raise SchemaError("only 'X or null' unions can be expressed")
    merged = {**inner[0], **{k: v for k, v in prop.items() if k != "anyOf"}}
    return merged


def _property(name: str, prop: dict[str, Any]) -> dict[str, Any]:
    prop = _nullable_inner(prop)
    kind = prop.get("type")
    description = str(prop.get("description") or prop.get("title") or name.replace("_", " "))
    if kind in LITERAL_TYPES:
        out: dict[str, Any] = {"type": kind, "description": description}
        if "enum" in prop:
            out["enum"] = [str(v) for v in prop["enum"]]
        return out
    if kind == "array":
        items = prop.get("items")
        if not isinstance(items, dict):
            raise SchemaError(f"array '{name}' has no item schema")
        return {"type": "array", "description": description, "items": _property(name, items)}
    if kind == "object":
        return {**object_schema(prop), "description": description}
    raise SchemaError(f"property '{name}' has an unsupported type {kind!r}")


def object_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON object schema (pydantic's `model_json_schema()`) in ElevenLabs' subset."""
    if "$defs" in schema or "$ref" in str(schema.get("properties", "")):
        raise SchemaError("schemas with references cannot be expressed")
    properties = schema.get("properties") or {}
    out: dict[str, Any] = {
        "type": "object",
        "properties": {name: _property(name, prop) for name, prop in properties.items()},
    }
    required = [str(r) for r in schema.get("required") or []]
    out["required"] = required
    return out


def client_tool(tool: Tool) -> dict[str, Any]:
    """The `tool_config` of a client tool answering `tool` from our dispatch table."""
    timeout = min(MAX_TIMEOUT_SECS, max(1, math.ceil(tool.timeout) + TIMEOUT_MARGIN_SECS))
    return {
        "type": "client",
        "name": tool.name,
        "description": tool.description,
        "parameters": object_schema(tool.args.model_json_schema()),
        "expects_response": True,
        "response_timeout_secs": timeout,
    }


def client_tools(tools: list[Tool]) -> list[dict[str, Any]]:
    return [client_tool(t) for t in tools if t.name not in SYSTEM_TOOLS]


# -- REST ---------------------------------------------------------------------------------


class AgentApiError(Exception):
    """ElevenLabs refused or could not be reached; the message is one sentence."""


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    tool_ids: dict[str, str] = field(default_factory=dict)
    attached: list[str] = field(default_factory=list)  # newly referenced by the agent

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "toolIds": self.tool_ids,
            "attachedToAgent": self.attached,
        }


class AgentToolsClient:
    """Creates or updates workspace client tools and references them from one agent."""

    def __init__(
        self, http: aiohttp.ClientSession, api_url: str, api_key: str, timeout: float = 15.0
    ) -> None:
        self.http = http
        self.base = api_url.rstrip("/")
        self.headers = {"xi-api-key": api_key}
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        url = f"{self.base}{path}"
        data = orjson.dumps(body) if body is not None else None
        headers = {**self.headers, **({"content-type": "application/json"} if data else {})}
        try:
            async with self.http.request(
                method, url, data=data, params=params, headers=headers, timeout=self.timeout
            ) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AgentApiError(f"ElevenLabs could not be reached ({type(exc).__name__})") from exc
        if status >= 300:
            raise AgentApiError(f"{method} {path} answered HTTP {status}{_detail(raw)}")
        return orjson.loads(raw) if raw else None

    async def client_tools_by_name(self) -> dict[str, str]:
        """Workspace client tools: name → id (every page)."""
        found: dict[str, str] = {}
        cursor: str | None = None
        while True:
            params = {"types": "client", "page_size": "100"}
            if cursor:
                params["cursor"] = cursor
            page = await self._call("GET", TOOLS_PATH, params=params)
            for item in page.get("tools") or []:
                config = item.get("tool_config") or {}
                if config.get("type") == "client" and config.get("name"):
                    found.setdefault(str(config["name"]), str(item["id"]))
            cursor = page.get("next_cursor")
            if not page.get("has_more") or not cursor:
                return found

    async def apply(self, agent_id: str, configs: list[dict[str, Any]]) -> ApplyReport:
        report = ApplyReport()
        agent = await self._call("GET", f"{AGENTS_PATH}/{agent_id}")
        existing = await self.client_tools_by_name()
        for config in configs:
            name = config["name"]
            if name in existing:
                tool_id = existing[name]
                await self._call("PATCH", f"{TOOLS_PATH}/{tool_id}", {"tool_config": config})
                report.updated.append(name)
            else:
                created = await self._call("POST", TOOLS_PATH, {"tool_config": config})
                tool_id = str(created["id"])
                report.created.append(name)
            report.tool_ids[name] = tool_id
        prompt = ((agent.get("conversation_config") or {}).get("agent") or {}).get("prompt") or {}
        current = [str(t) for t in prompt.get("tool_ids") or []]
        missing = [tid for tid in report.tool_ids.values() if tid not in current]
        if missing:
            body = {"conversation_config": {"agent": {"prompt": {"tool_ids": current + missing}}}}
            await self._call("PATCH", f"{AGENTS_PATH}/{agent_id}", body)
            by_id = {tid: name for name, tid in report.tool_ids.items()}
            report.attached = [by_id[tid] for tid in missing]
        return report


def _detail(raw: bytes) -> str:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    detail = data.get("detail") if isinstance(data, dict) else None
    if isinstance(detail, dict):
        detail = detail.get("message") or detail.get("status")
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        detail = detail[0].get("msg")
    return f": {str(detail)[:200]}" if detail else ""
