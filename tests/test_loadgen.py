"""`bench --driver node`: the Node.js load generator of bench/loadgen/ against a real server
process, and its frame markers against the Python ones."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from caller_engine.cli import build_parser
from caller_engine.replay import markers
from caller_engine.replay.bench import (
    BENCH_API_KEY,
    ServerProcess,
    _running,
    free_port,
    server_environment,
)
from caller_engine.replay.driver import Level, LevelResult
from caller_engine.replay.emulators import EmulatorOptions
from caller_engine.replay.loadgen import NodeLoadgen, loadgen_script, node_refusal
from caller_engine.replay.scenario import TurnCycle, synthetic_audio

ROOT = Path(__file__).resolve().parents[1]
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="Node.js (`node`) is not on PATH")
CALLS = 2
CALL_MS = 6000


def _node(script: str) -> Any:
    """Run an ES module snippet (it may import the generator's modules) and parse its output."""
    assert NODE is not None
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", script],
        cwd=ROOT / "bench" / "loadgen",
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(done.stdout)


@needs_node
def test_js_markers_match_python_markers() -> None:
    cases = [(0, 0), (1, 1), (3, 1234), (0xFFFF, 0xFFFFFF), (513, 70000), (42, 15)]
    stamped = markers.stamp_frames(bytes([0xFF]) * 800, 7, 10)  # 5 frames from seq 10
    script = f"""
        import {{ encode, find, stampFrames }} from './markers.mjs';
        const cases = {json.dumps(cases)};
        const py = Buffer.from('{stamped.hex()}', 'hex');
        console.log(JSON.stringify({{
          encoded: cases.map(([s, q]) => encode(s, q).toString('hex')),
          foundInPython: find(py).map(({{ stream, seq }}) => [stream, seq]),
          stamped: stampFrames(Buffer.alloc(800, 0xff), 9, 300).toString('hex'),
        }}));
    """
    out = _node(script)
    assert out["encoded"] == [markers.encode(s, q).hex() for s, q in cases]
    assert out["foundInPython"] == [[7, seq] for seq in range(10, 15)]
    js_stamped = bytes.fromhex(out["stamped"])
    assert js_stamped == markers.stamp_frames(bytes([0xFF]) * 800, 9, 300)
    assert [tuple(m) for m in markers.find(js_stamped)] == [(9, s) for s in range(300, 305)]


@needs_node
def test_js_signature_matches_python() -> None:
    from caller_engine.telephony.signature import twilio_signature

    url = "http://127.0.0.1:5050/twiml/outbound?callbackId=x&y=1"
    params = {"CallSid": "CA1", "To": "+15557654321", "AccountSid": "AC1", "B": "ü &="}
    out = _node(
        "import { sign } from './twilio.mjs';"
        f"console.log(JSON.stringify(sign('tok', {json.dumps(url)}, {json.dumps(params)})));"
    )
    assert out == twilio_signature("tok", url, params)


def test_node_driver_refuses_other_shapes() -> None:
    script = loadgen_script(ROOT)
    assert script is not None
    ok = {"cycle": "turns", "tool": False, "providers": ["openai"], "script": script}
    if NODE is not None:
        assert node_refusal(**ok) is None
    refusals = [
        node_refusal(**{**ok, "cycle": "barge"}),
        node_refusal(**{**ok, "tool": True}),
        node_refusal(**{**ok, "providers": ["gemini"]}),
        node_refusal(**{**ok, "script": None}),
    ]
    assert all(isinstance(r, str) and r.endswith(".") for r in refusals)
    parser = build_parser()
    assert parser.parse_args(["bench"]).driver == "python"
    assert parser.parse_args(["bench", "--driver", "node"]).driver == "node"


async def _run_levels(tmp_path: Path) -> list[tuple[LevelResult, dict[str, Any]]]:
    """One server; a level with `/call/initiate`, then one without: (result, counters) each."""
    scenario = TurnCycle()
    script = loadgen_script(ROOT)
    assert script is not None
    audio = synthetic_audio(scenario, CALL_MS)
    loadgen = NodeLoadgen(script, scenario, audio, EmulatorOptions(), api_key=BENCH_API_KEY)
    port = free_port()
    loadgen.target_url = f"http://127.0.0.1:{port}"
    out: list[tuple[LevelResult, dict[str, Any]]] = []
    async with loadgen:
        env = server_environment(loadgen, port, tmp_path, CALLS)
        server = ServerProcess(env, tmp_path, None, tmp_path / "server.log")
        async with _running(loadgen, server, None, CALLS):
            for initiate in (True, False):
                result = await loadgen.run_level(Level(CALLS, CALLS, 20.0, initiate=initiate))
                stats = await loadgen.stats()
                for _ in range(100):  # the summaries follow the hang-ups
                    if stats["summaries"] >= CALLS:
                        break
                    await asyncio.sleep(0.1)
                    stats = await loadgen.stats()
                out.append((result, stats))
    return out


@needs_node
async def test_node_driver_end_to_end(tmp_path: Path) -> None:
    """Calls with and without a record: every call completes, frames flow both ways with no
    loss and are timed, and each call's summary is asked of Chat Completions."""
    runs = await _run_levels(tmp_path)
    for (result, stats), initiate in zip(runs, (True, False), strict=True):
        report = result.report
        assert report["calls"] == CALLS
        assert report["failedCalls"] == 0, report["errors"]
        inbound, outbound = report["callerToModel"], report["modelToCaller"]
        # Every caller frame sent before the hang-up grace reached the model, and every agent
        # frame reached the caller: a 2 s greeting and one 2 s answer per call, 100 frames each.
        assert inbound["sent"] > 0 and inbound["lost"] == 0
        assert inbound["received"] >= inbound["sent"]
        assert outbound["sent"] == CALLS * 200 and outbound["lost"] == 0
        assert outbound["received"] == outbound["sent"]
        assert report["callsWithLoss"] == 0
        for direction in ("callerToModel", "modelToCaller"):
            assert report["wholeRun"][direction]["count"] > 0
            assert result.samples[direction]
        assert report["greeting"]["count"] == CALLS
        assert report["turnLatency"]["count"] == CALLS  # the caller's turn at 3 s was answered
        assert report["driver"]["kind"] == "node"
        assert report["driver"]["loopLagMs"]["count"] > 0
        assert report["server"]["cpuPercent"] >= 0
        loadgen = report["loadgen"]
        assert loadgen["modelViolations"] == []
        assert loadgen["twilioRest"]["created"] == (CALLS if initiate else 0)
        assert stats["summaries"] == CALLS  # every call's post-call summary: Chat Completions
