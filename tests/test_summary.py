"""The post-call summary client against the Chat Completions emulator (real HTTP)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from caller_engine.sim.openai.chat import ChatCompletionsEmulator, rate_limit_error, server_error
from caller_engine.sim.server import LoopbackServer
from caller_engine.transcript.summary import Summarizer, SummaryError

TRANSCRIPT = "[Agent]: Hello, this is the clinic.\n[User]: Book me for Monday at 10."


@pytest.fixture
async def chat() -> AsyncIterator[tuple[ChatCompletionsEmulator, str]]:
    emulator = ChatCompletionsEmulator(api_key="sk-sum")
    server = LoopbackServer(emulator.app())
    await server.start()
    yield emulator, server.url + "/v1"
    await server.stop()


async def test_summary_is_a_valid_structured_request_and_answer(
    chat: tuple[ChatCompletionsEmulator, str],
) -> None:
    emulator, base = chat
    summarizer = Summarizer("sk-sum", "gpt-4o-mini", base_url=base)
    try:
        summary = await summarizer.summarize(TRANSCRIPT, ["send_sms({}) -> {'status': 'sent'}"])
    finally:
        await summarizer.close()
    assert summary.sentiment in ("positive", "neutral", "negative")
    [body] = emulator.requests
    assert body["model"] == "gpt-4o-mini"
    assert body["response_format"]["json_schema"]["strict"] is True
    assert "Tool calls:\nsend_sms" in body["messages"][1]["content"]
    assert emulator.request_headers[0]["Authorization"] == "Bearer sk-sum"


async def test_rate_limits_and_server_errors_are_retried(
    chat: tuple[ChatCompletionsEmulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator, base = chat
    monkeypatch.setattr("caller_engine.transcript.summary.BACKOFF_S", 0.01)
    emulator.fail_next.extend([rate_limit_error(), server_error()])
    summarizer = Summarizer("sk-sum", "gpt-4o-mini", base_url=base)
    try:
        await summarizer.summarize(TRANSCRIPT, [])
    finally:
        await summarizer.close()
    assert len(emulator.requests) == 3


async def test_a_refused_request_fails_at_once_with_the_services_message(
    chat: tuple[ChatCompletionsEmulator, str],
) -> None:
    emulator, base = chat
    summarizer = Summarizer("sk-wrong", "gpt-4o-mini", base_url=base)
    try:
        with pytest.raises(SummaryError, match="HTTP 401: Incorrect API key"):
            await summarizer.summarize(TRANSCRIPT, [])
    finally:
        await summarizer.close()
    assert len(emulator.requests) == 1  # 401 is not retried


async def test_retries_give_up_after_two(
    chat: tuple[ChatCompletionsEmulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator, base = chat
    monkeypatch.setattr("caller_engine.transcript.summary.BACKOFF_S", 0.01)
    emulator.fail_next.extend([server_error()] * 3)
    summarizer = Summarizer("sk-sum", "gpt-4o-mini", base_url=base)
    try:
        with pytest.raises(SummaryError, match="HTTP 500"):
            await summarizer.summarize(TRANSCRIPT, [])
    finally:
        await summarizer.close()
    assert len(emulator.requests) == 3
