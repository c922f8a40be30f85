from __future__ import annotations

from pathlib import Path

import pytest

from caller_engine.config import ConfigError, load_settings
from tests.conftest import make_settings


def test_reports_every_missing_variable_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BASE_URL", "TWILIO_ACCOUNT_SID", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError) as err:
        load_settings(_env_file=None)
    text = str(err.value)
    for name in (
        "BASE_URL",
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_PHONE_NUMBER",
        "OPENAI_API_KEY",
    ):
        assert name in text
    assert "Traceback" not in text


def test_base_url_trailing_slash_and_ws_url() -> None:
    s = make_settings(base_url="https://calls.example.com/")
    assert s.base_url == "https://calls.example.com"
    assert s.public_ws_url("/media-stream") == "wss://calls.example.com/media-stream"
    local = make_settings(base_url="http://127.0.0.1:5050")
    assert local.public_ws_url("media-stream") == "ws://127.0.0.1:5050/media-stream"


def test_invalid_values_are_named() -> None:
    with pytest.raises(ConfigError) as err:
        make_settings(twilio_phone_number="5551234", base_url="calls.example.com", port=0)
    text = str(err.value)
    assert "TWILIO_PHONE_NUMBER" in text and "BASE_URL" in text and "PORT" in text


def test_tool_credentials_required_only_when_enabled() -> None:
    make_settings(enable_calendar_tools=False)
    with pytest.raises(ConfigError) as err:
        make_settings(enable_calendar_tools=True, enable_email_tools=True)
    text = str(err.value)
    for name in (
        "GOOGLE_CLIENT_EMAIL",
        "GOOGLE_PRIVATE_KEY",
        "GOOGLE_CALENDAR_ID",
        "GOOGLE_IMPERSONATED_USER",
    ):
        assert name in text


def test_private_key_accepts_escaped_newlines() -> None:
    s = make_settings(
        enable_calendar_tools=True,
        google_client_email="svc@example.iam.gserviceaccount.com",
        google_private_key="-----BEGIN PRIVATE KEY-----\\nabc\\n-----END PRIVATE KEY-----\\n",
        google_calendar_id="primary",
    )
    assert s.google_private_key is not None and "\nabc\n" in s.google_private_key


def test_production_refuses_unsafe_settings() -> None:
    with pytest.raises(ConfigError) as err:
        make_settings(environment="production", api_key=None, twilio_validate_signatures=False)
    assert "API_KEY" in str(err.value) and "TWILIO_VALIDATE_SIGNATURES" in str(err.value)
    make_settings(environment="production")


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASE_URL", "https://x.example.com/")
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC1")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "t")
    monkeypatch.setenv("TWILIO_PHONE_NUMBER", "+15550001111")
    monkeypatch.setenv("OPENAI_API_KEY", "sk")
    monkeypatch.setenv("CALL_TIME_LIMIT", "120")
    s = load_settings(_env_file=None)
    assert s.base_url == "https://x.example.com" and s.call_time_limit == 120 and s.port == 5050


def test_provider_selection_is_validated_with_one_message() -> None:
    with pytest.raises(ConfigError) as err:
        make_settings(realtime_provider="acme", realtime_fallback="openai,nope")
    text = str(err.value)
    assert "REALTIME_PROVIDER: must be one of" in text
    assert "REALTIME_FALLBACK: unknown provider nope" in text
    assert "Traceback" not in text


def test_selected_provider_needs_its_key() -> None:
    with pytest.raises(ConfigError) as err:
        make_settings(openai_api_key=None)
    assert "OPENAI_API_KEY: required when REALTIME_PROVIDER=openai" in str(err.value)


def test_provider_chain_puts_the_call_provider_first_without_repeats() -> None:
    s = make_settings(realtime_fallback="openai")
    assert s.provider_chain() == ("openai",)
    assert s.configured_providers == ("openai",)


def test_guardrail_settings_and_their_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    s = make_settings()
    assert (s.calling_hours, s.max_calls_per_number, s.frequency_window) == (
        "08:00-21:00",
        3,
        86400,
    )
    assert s.calling_window.days == frozenset(range(7)) and not s.allow_calling_hours_override
    monkeypatch.setenv("FREQUENCY_WINDOW", "30m")
    monkeypatch.setenv("CALLING_DAYS", "Mon,Fri")
    monkeypatch.setenv("CALLING_HOURS", "09:30-24:00")
    s = make_settings()
    assert s.frequency_window == 1800 and s.calling_days == "mon,fri"
    assert (s.calling_window.start, s.calling_window.end) == (9.5 * 3600, 24 * 3600)
    assert make_settings(frequency_window="7d").frequency_window == 7 * 86400
    with pytest.raises(ConfigError) as err:
        make_settings(
            calling_hours="21:00-08:00",
            calling_days="weekdays",
            frequency_window="soon",
            max_calls_per_number=-1,
        )
    text = str(err.value)
    for name in ("CALLING_HOURS", "CALLING_DAYS", "FREQUENCY_WINDOW", "MAX_CALLS_PER_NUMBER"):
        assert name in text


def test_every_documented_provider_name_has_a_provider() -> None:
    from caller_engine.realtime.names import PROVIDER_NAMES
    from caller_engine.realtime.providers import PROVIDERS

    assert set(PROVIDERS) == PROVIDER_NAMES


def test_env_example_loads_once_its_required_values_are_filled(tmp_path: Path) -> None:
    """Every `NAME=` left empty in .env.example means that setting's default."""
    example = (Path(__file__).parent.parent / ".env.example").read_text()
    filled = {
        "BASE_URL": "https://calls.example.com",
        "OPENAI_API_KEY": "sk-test",
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_AUTH_TOKEN": "token",
        "TWILIO_PHONE_NUMBER": "+15550001111",
    }
    lines = [
        f"{line.split('=', 1)[0]}={filled[line.split('=', 1)[0]]}"
        if line.split("=", 1)[0] in filled
        else line
        for line in example.splitlines()
    ]
    env = tmp_path / ".env"
    env.write_text("\n".join(lines) + "\n")
    s = load_settings(_env_file=str(env))
    assert s.metrics_port is None and s.realtime_provider == "openai"
