"""`bench`/`replay --provider`: the load driver against each realtime provider's emulator."""

from __future__ import annotations

from typing import Any

import pytest

from caller_engine.cli import build_parser
from caller_engine.replay.bench import compare_cpu, format_cpu_by_provider
from caller_engine.replay.driver import Driver, Level, Target
from caller_engine.replay.emulators import EmulatorOptions, Emulators
from caller_engine.replay.scenario import synthetic_audio
from caller_engine.sim.server import LoopbackServer
from caller_engine.web.app import create_app
from tests.bridge_env import free_port
from tests.conftest import ACCOUNT_SID, API_KEY, AUTH_TOKEN, make_settings
from tests.test_replay_run import SCENARIO


def test_provider_options_parse() -> None:
    parser = build_parser()
    args = parser.parse_args(["bench", "--provider", "openai,gemini", "--levels", "100"])
    assert args.provider == ["openai", "gemini"]
    assert parser.parse_args(["bench"]).provider == ["openai"]
    assert parser.parse_args(["replay", "--provider", "gemini"]).provider == "gemini"
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--provider", "openai,acme"])


def test_gemini_emulators_point_the_server_at_gemini() -> None:
    env = Emulators(EmulatorOptions(provider="gemini"))
    assert env.gemini is not None and env.model is None and env.chat is not None
    with pytest.raises(ValueError, match="unknown provider"):
        Emulators(EmulatorOptions(provider="acme"))


def _level(calls: int, per_call: float) -> dict[str, Any]:
    return {"concurrency": calls, "server": {"cpuPercentPerCall": per_call}}


def test_cpu_per_call_side_by_side_with_ratios() -> None:
    reports = {
        "openai": {"levels": [_level(100, 0.2)]},
        "gemini": {"levels": [_level(100, 0.3)]},
    }
    [row] = compare_cpu(reports)
    assert row["calls"] == 100
    assert row["cpuPercentPerCall"] == {"openai": 0.2, "gemini": 0.3}
    assert row["ratio"] == {"openai": 1.0, "gemini": 1.5}
    table = format_cpu_by_provider(reports)
    assert "| 100 | 0.2 | 0.3 | 1.5 |" in table


async def test_replay_drives_calls_through_the_gemini_emulator() -> None:
    emulators = Emulators(
        EmulatorOptions(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, provider="gemini")
    )
    await emulators.start()
    env = {name.lower(): value for name, value in emulators.server_env().items()}
    assert env["realtime_provider"] == "gemini"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = create_app(make_settings(base_url=base, vad_silence_ms=SCENARIO.vad_silence_ms, **env))
    server = LoopbackServer(app)
    await server.start(port)
    audio = synthetic_audio(SCENARIO, SCENARIO.cycle_ms + 300)
    try:
        target = Target(base, AUTH_TOKEN, ACCOUNT_SID, API_KEY)
        async with Driver(target, emulators, [audio], scenario=SCENARIO) as driver:
            assert not driver.marked  # markers would not survive the conversion
            result = await driver.run_level(Level(concurrency=2, total=2, ramp_per_s=50))
        recorder = driver.last_recorder
        gemini = emulators.gemini
        assert gemini is not None
        # Both calls spoke to the Gemini emulator: audio in, the scripted send_sms tool ran.
        assert len(gemini.sessions) >= 2
        assert len(emulators.rest.messages) == 2
    finally:
        await server.stop()
        await emulators.stop()
    report = result.report
    assert report["calls"] == 2 and report["failedCalls"] == 0, report["errors"]
    assert report["callerToModel"].get("lost", 0) == 0
    assert recorder is not None
    assert recorder.finish()["greeting"]["count"] == 2  # the agent spoke first on both


async def test_replay_drives_calls_through_the_nova_sonic_emulator() -> None:
    emulators = Emulators(
        EmulatorOptions(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, provider="nova_sonic")
    )
    assert emulators.nova_sonic is not None and emulators.model is None
    await emulators.start()
    env = {name.lower(): value for name, value in emulators.server_env().items()}
    assert env["realtime_provider"] == "nova_sonic"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = create_app(make_settings(base_url=base, vad_silence_ms=SCENARIO.vad_silence_ms, **env))
    server = LoopbackServer(app)
    await server.start(port)
    audio = synthetic_audio(SCENARIO, SCENARIO.cycle_ms + 300)
    try:
        target = Target(base, AUTH_TOKEN, ACCOUNT_SID, API_KEY)
        async with Driver(target, emulators, [audio], scenario=SCENARIO) as driver:
            assert not driver.marked
            result = await driver.run_level(Level(concurrency=2, total=2, ramp_per_s=50))
        nova = emulators.nova_sonic
        # Both calls spoke to the Nova Sonic emulator: signed streams, the send_sms tool ran.
        assert len(nova.sessions) == 2
        assert len(emulators.rest.messages) == 2
        assert nova.stream_errors == [] and nova.violations == []
    finally:
        await server.stop()
        await emulators.stop()
    report = result.report
    assert report["calls"] == 2 and report["failedCalls"] == 0, report["errors"]
    recorder = driver.last_recorder
    assert recorder is not None
    assert recorder.finish()["greeting"]["count"] == 2  # the agent spoke first on both
