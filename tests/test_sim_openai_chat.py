from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any, Literal

import openai
import orjson
import pytest
from pydantic import BaseModel

from caller_engine.sim import json_schema_fill
from caller_engine.sim.openai.chat import (
    ChatCompletionsEmulator,
    rate_limit_error,
    server_error,
)
from caller_engine.sim.server import LoopbackServer

TRANSCRIPT = [
    {"role": "system", "content": "Summarise the call as JSON. Outcomes: booked, declined."},
    {"role": "assistant", "content": "Hello, this is the clinic calling about your visit."},
    {
        "role": "user",
        "content": "Caller name: Ana Lopez. I can't make it, please arrange a callback on "
        "2025-03-14 at 10:30. My email is ana@example.com. Party size is 3.",
    },
]

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "outcome": {"type": "string", "enum": ["booked", "callback", "declined"]},
        "caller_name": {"type": "string"},
        "summary": {"type": "string"},
        "callback_at": {"type": ["string", "null"]},
        "notes_for_agent": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "email": {"type": "string"},
        "party_size": {"type": "integer", "minimum": 1},
        "voicemail": {"type": "boolean"},
        "topics": {"type": "array", "items": {"type": "string", "enum": ["visit", "billing"]}},
    },
    "required": [
        "outcome", "caller_name", "summary", "callback_at", "notes_for_agent", "email",
        "party_size", "voicemail", "topics",
    ],
    "additionalProperties": False,
}  # fmt: skip


@pytest.fixture
async def chat() -> AsyncIterator[tuple[ChatCompletionsEmulator, openai.AsyncOpenAI]]:
    emulator = ChatCompletionsEmulator(api_key="sk-chat")
    server = LoopbackServer(emulator.app())
    url = await server.start()
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-chat", max_retries=0)
    yield emulator, client
    await client.close()
    await server.stop()


def schema_format(schema: dict[str, Any], strict: bool = True) -> Any:
    return {
        "type": "json_schema",
        "json_schema": {"name": "call_summary", "schema": schema, "strict": strict},
    }


async def test_structured_output_follows_the_schema_and_the_transcript(chat: Any) -> None:
    emulator, client = chat
    completion = await client.chat.completions.create(
        model="gpt-4o-mini", messages=TRANSCRIPT, response_format=schema_format(SCHEMA)
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].finish_reason == "stop"
    content = completion.choices[0].message.content
    assert content is not None
    value = orjson.loads(content)
    assert json_schema_fill.problems(value, SCHEMA) == []
    assert value["outcome"] == "callback"  # the first allowed value the caller mentions
    assert value["caller_name"] == "Ana Lopez"
    assert value["callback_at"] == "2025-03-14 10:30"
    assert value["notes_for_agent"] is None
    assert value["email"] == "ana@example.com"
    assert value["party_size"] == 3
    assert value["voicemail"] is False
    assert value["topics"] == ["visit"]
    assert value["summary"].startswith("Hello, this is the clinic")
    assert emulator.requests[0]["model"] == "gpt-4o-mini"
    assert emulator.request_headers[0]["Authorization"] == "Bearer sk-chat"
    assert completion.usage is not None and completion.usage.total_tokens > 0


class Slot(BaseModel):
    day: str


class CallSummary(BaseModel):
    outcome: Literal["booked", "declined", "no_answer"]
    callback_date: datetime.date | None
    phone: str | None
    summary: str
    slots: list[Slot]


async def test_parse_helper_round_trips_a_pydantic_model(chat: Any) -> None:
    _, client = chat
    messages = [{"role": "user", "content": "Sorry, declined. Maybe on 2025-04-02."}]
    completion = await client.chat.completions.parse(
        model="gpt-4o-mini", messages=messages, response_format=CallSummary
    )
    parsed = completion.choices[0].message.parsed
    assert parsed is not None
    assert parsed.outcome == "declined"
    assert parsed.callback_date == datetime.date(2025, 4, 2)
    assert parsed.phone is None
    assert parsed.slots == []


async def test_nullable_dates_stay_null_without_a_date(chat: Any) -> None:
    _, client = chat
    messages = [{"role": "user", "content": "No thanks."}]
    completion = await client.chat.completions.parse(
        model="gpt-4o-mini", messages=messages, response_format=CallSummary
    )
    parsed = completion.choices[0].message.parsed
    assert parsed is not None
    assert (parsed.outcome, parsed.callback_date) == ("booked", None)  # first allowed value


async def test_wrong_key_is_a_401_invalid_api_key(chat: Any) -> None:
    emulator, client = chat
    wrong = client.with_options(api_key="sk-wrong-key-0000")
    with pytest.raises(openai.AuthenticationError) as raised:
        await wrong.chat.completions.create(model="gpt-4o-mini", messages=TRANSCRIPT)
    assert raised.value.code == "invalid_api_key"
    assert "sk-w" in raised.value.message and "sk-wrong-key-0000" not in raised.value.message
    assert len(emulator.requests) == 1


async def test_injected_failures_then_success(chat: Any) -> None:
    emulator, client = chat
    emulator.fail_next = [rate_limit_error(), server_error()]
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(model="gpt-4o-mini", messages=TRANSCRIPT)
    assert limited.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="gpt-4o-mini", messages=TRANSCRIPT)
    completion = await client.chat.completions.create(model="gpt-4o-mini", messages=TRANSCRIPT)
    assert completion.choices[0].message.content
    assert len(emulator.requests) == 3 and emulator.fail_next == []


async def test_client_retries_an_injected_429(chat: Any) -> None:
    emulator, client = chat
    emulator.fail_next = [(429, {"message": "slow down", "type": "requests", "code": None})]
    retrying = client.with_options(max_retries=1, timeout=5)
    completion = await retrying.chat.completions.create(model="gpt-4o-mini", messages=TRANSCRIPT)
    assert completion.choices[0].message.role == "assistant"
    assert len(emulator.requests) == 2


ONE_FIELD: dict[str, Any] = {"type": "object", "properties": {"a": {"type": "string"}}}
BAD_REQUESTS: list[tuple[dict[str, Any], str | None, str]] = [
    ({"messages": []}, "messages", "empty array"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "'robot'"),
    ({"extra_body": {"colour": "blue"}}, None, "Unrecognized request argument"),
    ({"response_format": {"type": "xml"}}, "response_format.type", "Invalid value"),
    (
        {
            "response_format": {"type": "json_object"},
            "messages": [{"role": "user", "content": "hi"}],
        },
        "messages",
        "must contain the word 'json'",
    ),
    (
        {"response_format": schema_format(ONE_FIELD)},
        "response_format",
        "'additionalProperties' is required to be supplied and to be false",
    ),
    (
        {"response_format": schema_format({**ONE_FIELD, "additionalProperties": False})},
        "response_format",
        "Missing 'a'",
    ),
    (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "bad name!", "schema": {}},
            }
        },
        "response_format.json_schema.name",
        "pattern",
    ),
]


@pytest.mark.parametrize(("kwargs", "param", "fragment"), BAD_REQUESTS)
async def test_invalid_requests_are_400s(
    chat: Any, kwargs: dict[str, Any], param: str | None, fragment: str
) -> None:
    _, client = chat
    arguments: dict[str, Any] = {"model": "gpt-4o-mini", "messages": TRANSCRIPT, **kwargs}
    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(**arguments)
    assert raised.value.param == param
    assert fragment in raised.value.message


async def test_non_strict_schema_and_plain_text(chat: Any) -> None:
    emulator, client = chat
    loose = {"type": "object", "properties": {"summary": {"type": "string"}}}
    completion = await client.chat.completions.create(
        model="gpt-4o-mini", messages=TRANSCRIPT, response_format=schema_format(loose, False)
    )
    assert set(orjson.loads(completion.choices[0].message.content or "")) == {"summary"}
    emulator.reply = lambda body: f"{len(body['messages'])} messages"
    completion = await client.chat.completions.create(model="gpt-4o-mini", messages=TRANSCRIPT)
    assert completion.choices[0].message.content == "3 messages"


def test_fill_resolves_refs_and_bounds() -> None:
    schema: dict[str, Any] = {
        "$defs": {"Tag": {"type": "string", "enum": ["a", "b"]}},
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"$ref": "#/$defs/Tag"}, "minItems": 1},
            "score": {"type": "number", "maximum": 5},
            "code": {"type": "string", "minLength": 3},
            "nested": {"$ref": "#/$defs/Tag"},
        },
    }
    value = json_schema_fill.fill(schema, "score: 9 and nothing else")
    assert value == {"tags": ["a"], "score": 5.0, "code": "...", "nested": "a"}
    assert json_schema_fill.problems(value, schema) == []
    assert json_schema_fill.problems({"tags": [], "score": "x"}, schema) == [
        "$.tags: fewer than 1 items",
        "$.score: expected number, got str",
    ]
    assert json_schema_fill.strict_problems({"type": "array"})[0].startswith("In context=()")
