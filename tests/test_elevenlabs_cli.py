"""`caller-engine elevenlabs tools`: definitions printed, and applied to an emulated agent."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import orjson
import pytest

from caller_engine.cli import main
from caller_engine.realtime.elevenlabs.commands import _tools
from caller_engine.sim.elevenlabs import ElevenLabsEmulator
from caller_engine.sim.elevenlabs.tools import check_tool_request
from caller_engine.sim.server import LoopbackServer
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, make_settings

KEY = "xi-cli-key"


def test_prints_enabled_tools_as_client_tools(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {
        "BASE_URL": "https://calls.example.com",
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_PHONE_NUMBER": "+15550001111",
        "OPENAI_API_KEY": "sk-test",
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["elevenlabs", "tools"]) == 0
    out = capsys.readouterr()
    tools = orjson.loads(out.out)["tools"]
    assert [t["tool_config"]["name"] for t in tools] == ["send_sms", "opt_out"]
    assert all(check_tool_request(t) == [] for t in tools)
    assert "end_call" in out.err  # named as the agent's own system tool


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[ElevenLabsEmulator, str]]:
    emulator = ElevenLabsEmulator(api_key=KEY)
    emulator.add_agent("agent_cli")
    server = LoopbackServer(emulator.app())
    await server.start()
    yield emulator, server.url
    await server.stop()


async def test_apply_creates_then_updates_and_attaches(
    emulator: tuple[ElevenLabsEmulator, str], capsys: pytest.CaptureFixture[str]
) -> None:
    sim, url = emulator
    settings = make_settings(elevenlabs_api_url=url, elevenlabs_api_key=KEY)
    args = argparse.Namespace(apply=True, agent_id="agent_cli")
    assert await _tools(args, settings) == 0
    first = orjson.loads(capsys.readouterr().out)
    names = ["send_sms", "opt_out"]  # the enabled tools; opt_out is always offered
    assert first["created"] == names and first["attachedToAgent"] == names
    agent = sim.agents["agent_cli"]
    ids = [first["toolIds"][name] for name in names]
    assert agent.tool_ids == ids
    assert await _tools(args, settings) == 0  # again: updated in place, nothing duplicated
    second = orjson.loads(capsys.readouterr().out)
    assert second["updated"] == names and second["created"] == []
    assert second["attachedToAgent"] == []
    assert len(sim.tools) == 2 and agent.tool_ids == ids
    config = sim.client_tool(agent, "send_sms")
    assert config is not None and config["expects_response"] is True


async def test_apply_reports_refusals_in_one_sentence(
    emulator: tuple[ElevenLabsEmulator, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = emulator
    settings = make_settings(elevenlabs_api_url=url, elevenlabs_api_key="wrong")
    assert await _tools(argparse.Namespace(apply=True, agent_id="agent_cli"), settings) == 1
    assert "HTTP 401" in capsys.readouterr().err
    settings = make_settings(elevenlabs_api_url=url, elevenlabs_api_key=KEY)
    assert await _tools(argparse.Namespace(apply=True, agent_id="nope"), settings) == 1
    assert "HTTP 404" in capsys.readouterr().err
