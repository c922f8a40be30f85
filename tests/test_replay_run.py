"""Load replay end to end: a real server on loopback, replay's own emulators, a few calls."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from caller_engine.bridge.capture import FORMAT_VERSION, frame_line
from caller_engine.cli import build_parser
from caller_engine.replay import cli as replay_cli
from caller_engine.replay import markers
from caller_engine.replay.captures import load_capture
from caller_engine.replay.driver import Driver, Level, Target
from caller_engine.replay.emulators import EmulatorOptions, Emulators
from caller_engine.replay.scenario import SILENT_FRAME, Scenario, TurnCycle, synthetic_audio
from caller_engine.sim.server import LoopbackServer
from caller_engine.web.app import create_app
from tests.bridge_env import free_port
from tests.conftest import ACCOUNT_SID, API_KEY, AUTH_TOKEN, make_settings

# One compact cycle: greeting, barge-in, reply with a tool call, follow-up, caller again.
SCENARIO = Scenario(
    long_ms=1200,
    barge_at_ms=300,
    speech_ms=200,
    vad_silence_ms=200,
    reply_ms=300,
    followup_ms=300,
    gap_ms=100,
)


@asynccontextmanager
async def replay_target(**settings: Any) -> AsyncIterator[tuple[Emulators, Target]]:
    emulators = Emulators(EmulatorOptions(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN))
    await emulators.start()
    env = {name.lower(): value for name, value in emulators.server_env().items()}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = create_app(
        make_settings(base_url=base, vad_silence_ms=SCENARIO.vad_silence_ms, **env, **settings)
    )
    server = LoopbackServer(app)
    await server.start(port)
    try:
        yield emulators, Target(base, AUTH_TOKEN, ACCOUNT_SID, API_KEY)
    finally:
        await server.stop()
        await emulators.stop()


async def test_replay_markers_round_trip_and_report_fields() -> None:
    # One cycle, and time for the answer to the caller's second line (before the next
    # barge-in, which would start at cycle + 300 ms).
    audio = synthetic_audio(SCENARIO, SCENARIO.cycle_ms + 300)
    async with replay_target() as (emulators, target):
        pid = os.getpid()
        async with Driver(target, emulators, [audio], scenario=SCENARIO, server_pid=pid) as driver:
            await driver.wait_for_server(5)
            result = await driver.run_level(Level(concurrency=3, total=3, ramp_per_s=50))
        recorder = driver.last_recorder
    assert recorder is not None
    report = result.report
    assert report["calls"] == 3 and report["failedCalls"] == 0, report["errors"]
    assert report["concurrency"] == 3
    # Every caller frame reached the model once and in order; model audio the same way.
    inbound, outbound = report["callerToModel"], report["modelToCaller"]
    assert inbound["lost"] == outbound["lost"] == 0
    assert inbound["duplicated"] == inbound["reordered"] == outbound["reordered"] == 0
    assert outbound["staleForwarded"] == 0
    assert inbound["sent"] > 0 and inbound["received"] >= inbound["sent"]
    assert outbound["sent"] > 0 and outbound["received"] >= outbound["sent"]
    for call in recorder.calls:
        assert call.inbound.received == len(call.sent_at) == len(audio.frames)
        assert call.inbound.highest == len(audio.frames) - 1
        assert len(call.in_latency) == len(audio.frames)
        assert call.out_transit and all(ms >= 0 for _, ms in call.out_transit)
    everything = recorder.finish()
    # One greeting, one barge-in (speech_started → clear) and one tool round trip per call.
    assert everything["greeting"]["count"] == 3
    assert everything["speechStartedToClear"]["count"] == 3
    assert everything["toolRoundTrip"]["count"] == 3
    assert everything["turnLatency"]["count"] >= 1  # answers to the caller's lines
    assert everything["callerToModel"]["count"] == 3 * len(audio.frames)
    for key in ("callerToModel", "modelToCaller", "greeting", "speechStartedToClear"):
        summary = everything[key]
        assert summary["p50"] <= summary["p95"] <= summary["p99"] <= summary["max"]
    assert len(emulators.rest.messages) == 3  # the scripted send_sms ran on every call
    for key in ("callerToModel", "modelToCaller", "wholeRun", "histograms", "window"):
        assert key in report
    assert {"p50", "p95", "p99", "max", "count"} <= set(report["callerToModel"])
    assert {"p50", "p95", "p99", "max", "count"} <= set(report["modelToCaller"]["jitter"])
    assert report["server"]["pid"] == os.getpid()
    assert report["server"]["cpuPercent"] >= 0 and report["server"]["rssMb"] > 0
    assert "loopLagMs" in report["driver"]
    assert set(result.samples) >= {"callerToModel", "modelToCaller", "speechStartedToClear"}


def _write_capture(path: Path, arrivals_ms: list[float]) -> None:
    header = {"v": FORMAT_VERSION, "callbackId": "cap-1", "encoding": "audio/x-mulaw"}
    lines = [orjson.dumps(header).decode()]
    payload = base64.b64encode(SILENT_FRAME).decode()
    lines += [frame_line(t, i * 20, payload).strip() for i, t in enumerate(arrivals_ms)]
    lines.append(orjson.dumps({"end": 1000.0, "frames": len(arrivals_ms)}).decode())
    path.write_text("\n".join(lines) + "\n")


async def test_captures_replay_with_their_original_timing(tmp_path: Path) -> None:
    arrivals = [5.0, 25.0, 45.0, 305.0, 325.0, 345.0]  # a 240 ms gap, as networks have
    path = tmp_path / "cap-1.jsonl"
    _write_capture(path, arrivals)
    audio = load_capture(path).audio()
    async with replay_target() as (emulators, target):
        async with Driver(target, emulators, [audio], scenario=SCENARIO) as driver:
            result = await driver.run_level(Level(concurrency=1, total=1, ramp_per_s=10))
        recorder = driver.last_recorder
    assert recorder is not None and result.report["failedCalls"] == 0
    [call] = recorder.calls
    assert call.inbound.received == len(arrivals)
    # No frame leaves before its captured time on the call's schedule (the sender's slack is
    # 1 ms): the 240 ms gap is kept instead of being closed up into a steady 20 ms stream.
    # (Measured from the schedule, not from the first frame, which a busy machine may delay.)
    assert call.audio_t0 is not None
    sent = [at - call.audio_t0 for at in call.sent_at]
    expected = [(t - arrivals[0]) / 1000 for t in arrivals]
    assert all(s >= e - 0.0011 for s, e in zip(sent, expected, strict=True))
    assert sent[3] >= 0.3 - 0.0011
    # markers were stamped on the captured frames for the emulator to read
    assert all(markers.first(markers.stamp(f, 0, 0)) == (0, 0) for f in audio.frames)


async def test_a_call_captured_by_the_server_replays_frame_for_frame(tmp_path: Path) -> None:
    audio = synthetic_audio(SCENARIO, 600)
    captures = tmp_path / "captures"
    async with (
        replay_target(media_capture_dir=str(captures)) as (emulators, target),
        Driver(target, emulators, [audio], scenario=SCENARIO) as driver,
    ):
        await driver.run_level(Level(concurrency=1, total=1, ramp_per_s=10))
        first = driver.last_recorder
        assert first is not None
        [path] = sorted(captures.iterdir())
        capture = load_capture(path)
        assert capture.callback_id == first.calls[0].callback_id
        # The caller's frames as they were sent (markers included), in order.
        stream = first.calls[0].stream
        assert capture.frames == [markers.stamp(f, stream, i) for i, f in enumerate(audio.frames)]
        assert capture.offsets == sorted(capture.offsets)
        driver.audio = [capture.audio()]
        replayed = await driver.run_level(Level(concurrency=1, total=1, ramp_per_s=10))
        second = driver.last_recorder
    # Played back with the capture's timing and this run's markers: every frame arrives.
    assert replayed.report["failedCalls"] == 0
    assert second is not None and second is not first
    [call] = second.calls
    assert call.inbound.received == len(call.sent_at) == len(audio.frames)
    assert replayed.report["callSeconds"] == pytest.approx(capture.audio().duration_s, abs=1e-3)


def test_replay_and_bench_are_commands() -> None:
    parser = build_parser()
    args = parser.parse_args(["replay", "--calls", "1,5", "--duration", "3", "--model", "external"])
    assert args.calls == [1, 5] and args.duration == 3.0 and args.model == "external"
    args = parser.parse_args(["bench", "--levels", "1,2", "--duration", "2"])
    assert args.levels == [1, 2] and args.func is not None
    with pytest.raises(SystemExit):
        parser.parse_args(["replay", "--calls", "0"])


def test_plot_without_matplotlib_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr("caller_engine.replay.plot.available", lambda: False)
    args = build_parser().parse_args(["bench", "--plot", str(tmp_path / "p.png")])
    assert replay_cli._bench(args) == 2
    assert "pip install 'caller-engine[plot]'" in capsys.readouterr().err


def _floor_module() -> Any:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "floor_bridge.py"
    spec = importlib.util.spec_from_file_location("floor_bridge", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_floor_bridge_and_the_product_run_the_turn_cycle_without_records() -> None:
    """The bench's floor (bench/floor_bridge.py) passes audio both ways like the product, and
    the driver can place calls without /call/initiate against either."""
    from aiohttp import web

    cycle = TurnCycle(
        greeting_ms=400, first_turn_ms=600, every_ms=2000, speech_ms=200, answer_ms=1000
    )
    audio = synthetic_audio(cycle, 3000)  # the second turn's answer may be cut by the hang-up
    emulators = Emulators(EmulatorOptions(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN))
    await emulators.start()
    port = free_port()
    model_url = emulators.server_env()["OPENAI_REALTIME_URL"] + "?model=gpt-realtime"
    floor = _floor_module().Floor(
        f"ws://127.0.0.1:{port}/media-stream", model_url, emulators.options.openai_key
    )
    app = web.Application()
    app.router.add_get("/health", floor.health)
    app.router.add_route("*", "/twiml/outbound", floor.twiml)
    app.router.add_get("/media-stream", floor.media)
    server = LoopbackServer(app)
    await server.start(port)
    target = Target(f"http://127.0.0.1:{port}", AUTH_TOKEN, ACCOUNT_SID, None)
    try:
        async with Driver(target, emulators, [audio], scenario=cycle) as driver:
            result = await driver.run_level(Level(2, 2, 10, initiate=False))
    finally:
        await server.stop()
        await emulators.stop()
    report = result.report
    assert report["failedCalls"] == 0
    assert report["callsWithLoss"] == 0 and report["maxLostInOneCall"] == 0
    assert report["callerToModel"]["lost"] == 0 and report["callerToModel"]["received"] > 0
    # the greeting and one answer per caller turn reached each caller
    assert report["modelToCaller"]["received"] >= 2 * (400 + 1000) // 20
    assert report["modelToCaller"]["lost"] == 0

    async with (
        replay_target() as (emulators, target),
        Driver(target, emulators, [audio], scenario=cycle) as driver,
    ):
        product = await driver.run_level(Level(2, 2, 10, initiate=False))
    assert product.report["failedCalls"] == 0 and product.report["callsWithLoss"] == 0
    assert product.report["modelToCaller"]["received"] >= 2 * (400 + 1000) // 20


async def test_call_costs_are_measured_per_phase_with_and_without_a_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bench's per-call CPU phases run against a server (here in this process, whose
    own polling counts as quiet)."""
    from caller_engine.replay import costs
    from caller_engine.replay.bench import format_costs
    from caller_engine.replay.costs import cpu_ns, measure_call_costs

    if cpu_ns(os.getpid()) is None:
        pytest.skip("no /proc/<pid>/task/*/schedstat here")
    monkeypatch.setattr(costs, "QUIET_NS", 5_000_000)
    monkeypatch.setattr(costs, "MAX_SETTLE_S", 1.0)
    async with (
        replay_target() as (emulators, target),
        Driver(target, emulators, [synthetic_audio(SCENARIO, 600)], scenario=SCENARIO) as driver,
    ):
        driver.server_pid = os.getpid()
        with_record = await measure_call_costs(driver, 2, with_record=True)
        without = await measure_call_costs(driver, 2, with_record=False)
        placed = len(emulators.rest.calls)
        in_bursts = await measure_call_costs(driver, 4, with_record=True, burst=2)
    assert set(with_record) == {"initiate", "setup", "teardown"}
    assert set(without) == {"setup", "teardown"}
    for figures in (*with_record.values(), *without.values(), *in_bursts.values()):
        assert figures["calls"] == 2  # calls one at a time, or bursts of two
        assert 0 < figures["medianMs"] <= figures["maxMs"]
    assert placed == 2  # the initiated calls were placed through Twilio's REST API
    assert len(emulators.rest.calls) == placed + 4  # each burst placed its two calls
    text = format_costs({"withRecord": with_record, "withRecordBurst": in_bursts, "burst": 2})
    assert "one call at a time" in text and "in bursts of 2" in text
