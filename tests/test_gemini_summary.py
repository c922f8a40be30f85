"""The post-call summary from Gemini (`generateContent` with a JSON response schema):
selection by SUMMARY_PROVIDER and the keys present, the request the emulator validates,
its refusals, and a whole call on a Gemini-only summary."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from caller_engine.config import ConfigError
from caller_engine.sim.gemini import GenerateContentEmulator
from caller_engine.sim.server import LoopbackServer
from caller_engine.transcript.summary import SUMMARY_SCHEMA, GeminiSummarizer, SummaryError
from caller_engine.web.app import _summarizer
from tests.conftest import make_settings
from tests.providers import Turn, provider_env, tone_ulaw

KEY = "gemini-test-key"
SPEECH = tone_ulaw(600, 300.0)
TRANSCRIPT = (
    "Agent: Hello, Acme Dental.\nUser: I'd like a cleaning.\n"
    "Agent: You are booked for 2026-12-03T10:00. Thank you!"
)


@asynccontextmanager
async def generate_server() -> AsyncIterator[tuple[GenerateContentEmulator, str]]:
    emulator = GenerateContentEmulator(KEY)
    app = aiohttp.web.Application()
    emulator.add_routes(app)
    server = LoopbackServer(app)
    await server.start()
    try:
        yield emulator, server.url
    finally:
        await server.stop()


def test_gemini_settings_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_INPUT_RATE", "8000")
    monkeypatch.setenv("SUMMARY_PROVIDER", "gemini")
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    s = make_settings()
    assert (s.gemini_input_rate, s.summary_backend) == (8000, "gemini")
    monkeypatch.setenv("GEMINI_INPUT_RATE", "44100")
    with pytest.raises(ConfigError, match="GEMINI_INPUT_RATE"):
        make_settings()


def test_the_summary_model_follows_the_keys_and_summary_provider() -> None:
    gemini_only = make_settings(openai_api_key=None, realtime_provider="gemini", gemini_api_key=KEY)
    assert gemini_only.summary_backend == "gemini"
    assert isinstance(_summarizer(gemini_only), GeminiSummarizer)
    both = make_settings(gemini_api_key=KEY)
    assert both.summary_backend == "openai"
    assert make_settings(gemini_api_key=KEY, summary_provider="gemini").summary_backend == "gemini"
    assert make_settings(summary_provider="").summary_provider is None
    with pytest.raises(ConfigError) as err:
        make_settings(summary_provider="gemini")
    assert "GEMINI_API_KEY is required when SUMMARY_PROVIDER=gemini" in str(err.value)
    with pytest.raises(ConfigError) as err:
        make_settings(summary_provider="acme")
    assert "SUMMARY_PROVIDER" in str(err.value)


async def test_gemini_summary_fills_the_same_fields() -> None:
    async with generate_server() as (emulator, url):
        summarizer = GeminiSummarizer(api_key=KEY, model="gemini-2.5-flash", base_url=url)
        try:
            summary = await summarizer.summarize(TRANSCRIPT, ["book_appointment({}) -> ok"])
        finally:
            await summarizer.close()
    assert emulator.refusals == []
    [body] = emulator.requests
    assert emulator.models == ["gemini-2.5-flash"]
    config = body["generationConfig"]
    assert config == {"responseMimeType": "application/json", "responseJsonSchema": SUMMARY_SCHEMA}
    assert "book_appointment" in body["contents"][0]["parts"][0]["text"]
    assert summary.scheduledDate is not None and summary.scheduledDate.startswith("2026-12-03")
    assert summary.sentiment in ("positive", "neutral", "negative")


async def test_refusals_come_back_as_one_sentence() -> None:
    async with generate_server() as (emulator, url):
        wrong_key = GeminiSummarizer(api_key="nope", model="gemini-2.5-flash", base_url=url)
        unknown_model = GeminiSummarizer(api_key=KEY, model="gpt-4o", base_url=url)
        try:
            with pytest.raises(SummaryError, match="HTTP 400: API key not valid"):
                await wrong_key.summarize(TRANSCRIPT, [])
            with pytest.raises(SummaryError, match="HTTP 404: models/gpt-4o is not found"):
                await unknown_model.summarize(TRANSCRIPT, [])
        finally:
            await wrong_key.close()
            await unknown_model.close()
        async with aiohttp.ClientSession() as http:
            target = f"{url}/v1beta/models/gemini-2.5-flash:generateContent"
            contents = [{"role": "user", "parts": [{"text": "hi"}]}]
            for body, message in [
                ({"contents": contents, "responseSchema": {}}, 'Unknown name "responseSchema"'),
                ({"contents": [{"role": "user", "parts": [{"txt": "hi"}]}]}, 'Unknown name "txt"'),
                (
                    {"contents": contents, "generationConfig": {"responseJsonSchema": {}}},
                    "response_mime_type",
                ),
                ({"contents": []}, "contents is not specified"),
            ]:
                async with http.post(target, json=body, headers={"x-goog-api-key": KEY}) as r:
                    answer = await r.json()
                assert r.status == 400, body
                assert answer["error"]["status"] == "INVALID_ARGUMENT"
                assert message in answer["error"]["message"]
    assert emulator.requests == []


async def test_a_call_with_a_gemini_summary() -> None:
    async with provider_env(
        "gemini",
        [Turn("Hello from the clinic.", 200)],
        ["I want to book."],
        summary_provider="gemini",
    ) as (env, model):
        client = await env.call("cb-summary", speed=4.0)
        await client.wait_until(lambda: len(client.received_audio) >= 1500, 5)
        await client.send_audio(SPEECH)
        await client.send_silence(600)
        await client.stop()
        result = await env.result("cb-summary")
    emulator = model.emulator  # type: ignore[attr-defined]
    assert len(emulator.generate.requests) == 1 and emulator.generate.refusals == []
    assert result.summary is not None and result.summaryError is None
    assert env.chat.requests == []  # OpenAI was not asked
