"""A model connection's proxy comes from the environment, looked up once per host."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from caller_engine.realtime.proxy import forget_proxies, model_proxy

PROXY_VARIABLES = ("ws_proxy", "wss_proxy", "socks_proxy", "https_proxy", "http_proxy")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (*PROXY_VARIABLES, "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    forget_proxies()
    yield
    forget_proxies()


def test_without_proxy_settings_a_model_is_reached_directly() -> None:
    assert model_proxy("wss://api.openai.com/v1/realtime?model=gpt-realtime") is None


def test_a_secure_model_goes_through_the_https_proxy_unless_bypassed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1,.emulators.test")
    assert model_proxy("wss://api.openai.com/v1/realtime") == "http://proxy.internal:3128"
    assert model_proxy("ws://127.0.0.1:8765/v1/realtime") is None
    assert model_proxy("wss://gemini.emulators.test/ws") is None


def test_the_environment_is_read_once_per_host(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "wss://api.elevenlabs.io/v1/convai/conversation?agent_id=a"
    assert model_proxy(url) is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert model_proxy(url) is None  # the server's environment does not change while it runs
    assert model_proxy("wss://other.example.com/") == "http://proxy.internal:3128"
    forget_proxies()
    assert model_proxy(url) == "http://proxy.internal:3128"
