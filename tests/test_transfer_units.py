"""Transfer targets, outcomes, TwiML, the tool and the REST update: pure pieces and the
Twilio REST emulator as the SDK sees it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from caller_engine.bridge.handoff import welcome_back
from caller_engine.calls.transfer import (
    TargetError,
    TargetSpec,
    Transfer,
    TransferTarget,
    call_targets,
    dial_outcome,
    merge_configured,
    parse_targets,
    parse_targets_file,
)
from caller_engine.config import ConfigError
from caller_engine.sim.server import LoopbackServer
from caller_engine.sim.twilio.rest import EmulatedCall, TwilioRestEmulator
from caller_engine.sim.twilio.twiml_reader import (
    Dial,
    DialNumber,
    Gather,
    Hangup,
    Play,
    Say,
    parse_twiml,
)
from caller_engine.telephony import twiml
from caller_engine.telephony.rest import TelephonyError, TwilioGateway
from caller_engine.tools.registry import ToolContext, ToolRegistry
from caller_engine.tools.transfer import transfer_tool
from caller_engine.transcript.collector import TranscriptCollector
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, make_settings

SALES = TransferTarget(name="sales", number="+15551230001", description="new patients")
SUPPORT = TransferTarget(name="support", number="+15551230002")


def test_parse_targets() -> None:
    assert parse_targets(" sales=+15551230001 , support=+15551230002,") == [
        SALES.model_copy(update={"description": None}),
        SUPPORT,
    ]
    assert parse_targets("") == []
    for bad, message in (
        ("sales", r"is not name=\+number"),
        ("sales=15551230001", "E.164"),
        ("bad name=+15551230001", "E.164"),
        ("a=+15551230001,a=+15551230002", "listed twice"),
    ):
        with pytest.raises(TargetError, match=message):
            parse_targets(bad)


def test_parse_targets_file() -> None:
    listed = '[{"name": "sales", "number": "+15551230001", "description": "new patients"}]'
    assert parse_targets_file(listed) == [SALES]
    keyed = '{"sales": {"number": "+15551230001", "description": "new patients"}}'
    assert parse_targets_file(keyed) == [SALES]
    for bad, message in (
        ("{", "not JSON"),
        ('"sales"', "must be a JSON list"),
        ('[{"name": "sales", "number": "0"}]', "invalid number"),
        ('[{"name": "sales", "number": "+15551230001", "extra": 1}]', "invalid extra"),
    ):
        with pytest.raises(TargetError, match=message):
            parse_targets_file(bad)


def test_merge_configured_keeps_the_file_description() -> None:
    env = parse_targets("sales=+15551230009")
    merged = merge_configured(env, [SALES, SUPPORT])
    assert merged == [
        TransferTarget(name="sales", number="+15551230009", description="new patients"),
        SUPPORT,
    ]


def test_call_targets() -> None:
    configured = [SALES, SUPPORT]
    assert call_targets(configured, None) == configured
    assert call_targets(configured, [TargetSpec(name="support")]) == [SUPPORT]
    own = TargetSpec(name="owner", number="+15551230003", description="the owner")
    assert call_targets([], [own]) == [TransferTarget(**own.model_dump())]
    renamed = call_targets(configured, [TargetSpec(name="sales", description="bookings")])
    assert renamed[0].description == "bookings" and renamed[0].number == SALES.number
    with pytest.raises(TargetError, match="'legal' is not a configured transfer target"):
        call_targets(configured, [TargetSpec(name="legal")])
    assert call_targets(configured, []) == []


@pytest.mark.parametrize(
    ("status", "accepted", "outcome"),
    [
        ("completed", True, "connected"),
        ("answered", True, "connected"),
        ("completed", False, "declined"),
        ("busy", False, "busy"),
        ("no-answer", False, "no-answer"),
        ("failed", False, "failed"),
        ("canceled", True, "canceled"),
        ("something-new", False, "failed"),
    ],
)
def test_dial_outcome(status: str, accepted: bool, outcome: str) -> None:
    assert dial_outcome(status, accepted) == outcome


def test_settings_read_targets(tmp_path: Path) -> None:
    path = tmp_path / "targets.json"
    path.write_text(json.dumps([SALES.model_dump(), SUPPORT.model_dump()]))
    settings = make_settings(
        transfer_targets="support=+15551230007", transfer_targets_file=str(path)
    )
    assert settings.configured_transfer_targets == [
        SALES,
        TransferTarget(name="support", number="+15551230007"),
    ]
    assert make_settings().configured_transfer_targets == []
    with pytest.raises(ConfigError, match="TRANSFER_TARGETS: 'sales=1'"):
        make_settings(transfer_targets="sales=1")
    with pytest.raises(ConfigError, match="TRANSFER_TARGETS_FILE: cannot be read"):
        make_settings(transfer_targets_file=str(tmp_path / "missing.json"))
    path.write_text("[1]")
    with pytest.raises(ConfigError, match="TRANSFER_TARGETS_FILE: entry 1"):
        make_settings(transfer_targets_file=str(path))
    with pytest.raises(ConfigError, match="TRANSFER_HOLD_MUSIC_URL"):
        make_settings(transfer_hold_music_url="hold.mp3")


def test_transfer_twiml_reads_back_as_the_network_runs_it() -> None:
    document = twiml.transfer_dial(
        number=SALES.number,
        caller_id="+15550001111",
        timeout=20,
        time_limit=3600,
        whisper_url="https://calls.example.com/twiml/transfer/whisper?callbackId=a&token=b",
        action_url="https://calls.example.com/twiml/transfer/done?callbackId=a&token=b",
        hold_music_url="https://cdn.example.com/hold.mp3",
    )
    assert parse_twiml(document) == [
        Play("https://cdn.example.com/hold.mp3"),
        Dial(
            numbers=(
                DialNumber(
                    SALES.number,
                    "https://calls.example.com/twiml/transfer/whisper?callbackId=a&token=b",
                    "POST",
                ),
            ),
            action="https://calls.example.com/twiml/transfer/done?callbackId=a&token=b",
            method="POST",
            timeout=20,
            time_limit=3600,
            caller_id="+15550001111",
            answer_on_bridge=True,
        ),
    ]
    assert parse_twiml(twiml.whisper("Press 1 to accept.", "https://h/screen", 6)) == [
        Gather((Say("Press 1 to accept."),), 1, "https://h/screen", "POST", 6),
        Hangup(),
    ]


def _ctx(calls: list[tuple[str, str, str]]) -> ToolContext:
    async def transfer(target: TransferTarget, reason: str, summary: str) -> dict[str, Any]:
        calls.append((target.name, reason, summary))
        return {"status": "transferring"}

    return ToolContext("cb", "CA1", "+15550002222", logger.bind(), transfer=transfer)


async def test_transfer_tool_offers_and_accepts_only_the_call_targets() -> None:
    tool = transfer_tool([SALES, SUPPORT])
    schema = tool.schema()
    assert schema["parameters"]["properties"]["target"]["enum"] == ["sales", "support"]
    assert schema["parameters"]["required"] == ["target", "summary"]
    assert "sales (new patients); support" in schema["description"]
    registry = ToolRegistry([tool])
    calls: list[tuple[str, str, str]] = []
    ok = await registry.dispatch(
        "transfer_call",
        '{"target": "support", "reason": " billing ", "summary": "Alex, a bill question."}',
        _ctx(calls),
    )
    assert ok.ok and ok.output == {"status": "transferring"}
    assert calls == [("support", "billing", "Alex, a bill question.")]
    refused = await registry.dispatch(
        "transfer_call", '{"target": "+19005550100", "summary": "x"}', _ctx(calls)
    )
    assert not refused.ok and "The choices are: sales, support." in refused.output["error"]
    missing = await registry.dispatch("transfer_call", '{"target": "sales"}', _ctx(calls))
    assert not missing.ok and "summary" in missing.output["error"]
    assert len(calls) == 1
    with pytest.raises(ValueError, match="at least one target"):
        transfer_tool([])


def test_welcome_back_and_the_transcript_entry() -> None:
    transfer = Transfer(target="sales", number=SALES.number, requestedAt="t", status="busy")
    cue = welcome_back("You are Dana.", transfer)
    assert cue.startswith("You are Dana.\n\n") and "the line was busy" in cue
    assert "offer to book a call-back" in cue
    transcript = TranscriptCollector()
    transcript.system("Transfer to sales: not connected (busy)", 3.0)
    [entry] = transcript.entries()
    assert (entry.role, entry.text) == ("system", "Transfer to sales: not connected (busy)")
    [item] = transcript.history()
    assert (item.role, item.text) == ("user", "[Transfer to sales: not connected (busy)]")
    assert transcript.finalize(None, "cb", 1.0)["fullText"] == (
        "[Call]: Transfer to sales: not connected (busy)"
    )


async def test_call_update_with_twiml_through_the_sdk() -> None:
    rest = TwilioRestEmulator(ACCOUNT_SID, AUTH_TOKEN)
    updated: list[EmulatedCall] = []
    rest.on_call_updated.append(updated.append)
    server = LoopbackServer(rest.app())
    await server.start()
    gateway = TwilioGateway(ACCOUNT_SID, AUTH_TOKEN, "+15550001111", base_url=server.url)
    try:
        call = EmulatedCall("CA" + "2" * 32, "+15550002222", "+15550001111", rest_form())
        rest.calls[call.sid] = call
        with pytest.raises(TelephonyError) as refused:
            await gateway.redirect(call.sid, twiml.hangup())
        assert refused.value.code == 21220 and refused.value.http_status == 400
        call.status = "in-progress"
        assert await gateway.redirect(call.sid, twiml.hangup(), time_limit=3600)
        [seen] = updated
        assert seen.last_update["Twiml"] == twiml.hangup()
        assert seen.last_update["TimeLimit"] == "3600"
        with pytest.raises(TelephonyError):
            await gateway.redirect(call.sid, twiml.hangup(), time_limit=5)
        call.status = "completed"
        assert not await gateway.redirect(call.sid, twiml.hangup())
    finally:
        await gateway.close()
        await server.stop()


def rest_form() -> Any:
    from multidict import MultiDict

    return MultiDict({"Url": "https://calls.example.com/twiml/outbound"})
