"""Load replay, pure parts: markers, statistics, /proc parsing, report, captures, scenario."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import pytest

from caller_engine.audio import mulaw
from caller_engine.bridge.capture import MediaCapture
from caller_engine.replay import markers
from caller_engine.replay.captures import CaptureError, find_captures, load_capture
from caller_engine.replay.driver import parse_stream_twiml, steady_window
from caller_engine.replay.probes import CallProbe, clear_latencies
from caller_engine.replay.procstat import (
    find_listening_pid,
    listening_inodes,
    parse_rss,
    parse_stat,
    parse_system_stat,
)
from caller_engine.replay.report import (
    caveats,
    evaluate_targets,
    format_tables,
    latency_table,
)
from caller_engine.replay.scenario import (
    SILENT_FRAME,
    SPEECH_THRESHOLD,
    MarkedScript,
    Scenario,
    find_utterances,
    synthetic_audio,
)
from caller_engine.replay.stats import (
    SequenceCheck,
    histogram,
    jitter,
    percentile,
    summarize,
)
from caller_engine.telephony import twiml

# -- markers --------------------------------------------------------------------------------


@pytest.mark.parametrize(("stream", "seq"), [(0, 0), (1, 2), (65535, 16777215), (300, 70000)])
def test_marker_round_trip(stream: int, seq: int) -> None:
    marker = markers.encode(stream, seq)
    assert len(marker) == markers.MARKER_BYTES
    assert list(markers.find(b"\xff" * 37 + marker + b"\xff" * 5)) == [(stream, seq)]


def test_markers_are_silence_to_a_vad_and_speech_stays_speech() -> None:
    silent = markers.stamp(SILENT_FRAME, 65535, 16777215)
    assert len(silent) == 160
    assert mulaw.frame_energy(silent) < 20 < SPEECH_THRESHOLD
    loud = markers.stamp(mulaw.tone(20, 300.0, 9000), 7, 9)
    assert mulaw.frame_energy(loud) > 5 * SPEECH_THRESHOLD
    assert markers.first(loud) == (7, 9)


def test_markers_survive_any_rechunking() -> None:
    audio = markers.stamp_frames(mulaw.tone(200), stream=3, first_seq=100)
    assert [m.seq for m in markers.find(audio)] == list(range(100, 110))
    assert markers.count_frames(len(audio)) == 10
    # Split at arbitrary points: every marker wholly inside a piece is still found.
    pieces = [audio[:250], audio[250:333], audio[333:]]
    found = [m.seq for piece in pieces for m in markers.find(piece)]
    assert set(found) <= set(range(100, 110))
    assert len(found) >= 8


def test_a_corrupted_marker_is_rejected() -> None:
    marker = bytearray(markers.encode(12, 345))
    marker[-1] ^= 0x01  # one nibble of the check byte
    assert list(markers.find(bytes(marker))) == []
    marker = bytearray(markers.encode(12, 345))
    marker[8] = 0x12  # not a marker code at all
    assert markers.first(bytes(marker)) is None


def test_marker_ranges() -> None:
    with pytest.raises(ValueError, match="stream"):
        markers.encode(65536, 0)
    with pytest.raises(ValueError, match="seq"):
        markers.encode(0, -1)


def test_marked_script_numbers_frames_across_responses() -> None:
    scenario = Scenario(long_ms=200, reply_ms=100, followup_ms=60)
    script = MarkedScript(stream=9, plan=scenario.responses())
    first, second, third, fourth = (script.next_response() for _ in range(4))
    assert second.tool_calls == [("send_sms", {"message": second.tool_calls[0][1]["message"]})]
    seqs = [[m.seq for m in markers.find(r.audio or b"")] for r in (first, second, third, fourth)]
    assert seqs[0] == list(range(10))
    assert seqs[1] == list(range(10, 15))
    assert seqs[2] == list(range(15, 18))
    assert seqs[3] == list(range(18, 28))  # the cycle repeats with fresh numbers
    assert {m.stream for m in markers.find(fourth.audio or b"")} == {9}


# -- scenario -------------------------------------------------------------------------------


def test_synthetic_caller_barges_in_then_speaks_again_each_cycle() -> None:
    scenario = Scenario()
    audio = synthetic_audio(scenario, scenario.cycle_ms)
    loud = [mulaw.frame_energy(f) > SPEECH_THRESHOLD for f in audio.frames]
    starts = [i * 20 for i, v in enumerate(loud) if v and (i == 0 or not loud[i - 1])]
    assert starts == [scenario.barge_at_ms, scenario.second_speech_at_ms]
    assert audio.utterances == {
        (scenario.barge_at_ms + scenario.speech_ms) // 20 - 1: scenario.barge_at_ms // 20,
        (scenario.second_speech_at_ms + scenario.speech_ms) // 20 - 1: scenario.second_speech_at_ms
        // 20,
    }
    assert audio.offsets[1] - audio.offsets[0] == pytest.approx(0.02)
    assert find_utterances(audio.frames) == audio.utterances


# -- statistics -----------------------------------------------------------------------------


def test_percentiles_interpolate_like_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 95) == pytest.approx(8.8)
    assert percentile(values, 100) == 10.0
    assert percentile([5.0], 99) == 5.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_summary_and_histogram() -> None:
    summary = summarize([3.0, 1.0, 2.0])
    assert summary == {"count": 3, "mean": 2.0, "p50": 2.0, "p95": 2.9, "p99": 2.98, "max": 3.0}
    assert summarize([]) == {"count": 0}
    hist = histogram([0.001, 0.42, 0.48, 3.0, 1e9])
    assert sum(hist["counts"]) == 5
    assert hist["counts"][0] == 1  # below the first edge
    low, high = hist["edgesMs"][1]
    assert low <= 0.42 < 0.48 < high and hist["counts"][1] == 2


def test_sequence_check_counts_duplicates_and_reordering() -> None:
    check = SequenceCheck()
    for seq in (0, 1, 3, 2, 3, 4):
        check.arrive(seq)
    assert (check.received, check.duplicates, check.reordered) == (5, 1, 1)
    assert check.has(2) and not check.has(5)


def test_jitter_is_the_change_in_transit_time() -> None:
    assert jitter([(1.0, 2.0), (2.0, 5.0), (3.0, 4.0)]) == [(2.0, 3.0), (3.0, 1.0)]


def test_each_clear_is_timed_from_the_speech_start_before_it() -> None:
    got = clear_latencies([1.0, 5.0, 9.0], [1.002, 5.004, 7.0])
    assert [(at, round(ms, 6)) for at, ms in got] == [(1.002, 2.0), (5.004, 4.0)]


def test_steady_window_spans_the_time_every_call_was_up() -> None:
    calls = [CallProbe(i, i, f"c{i}", started_at=s, stopped_at=e) for i, (s, e) in
             enumerate([(0.0, 10.0), (1.0, 11.0), (2.0, 12.0)])]  # fmt: skip
    assert steady_window(calls) == (2.0, 10.0, 3, True)
    short = [CallProbe(0, 0, "a", started_at=0.0, stopped_at=1.0),
             CallProbe(1, 1, "b", started_at=0.9, stopped_at=2.0)]  # fmt: skip
    start, end, active, all_up = steady_window(short) or (0, 0, 0, True)
    assert (start, end, all_up) == (0.0, 2.0, False) and active == 1
    assert steady_window([CallProbe(0, 0, "x")]) is None


# -- /proc ----------------------------------------------------------------------------------


def test_proc_parsers() -> None:
    stat = "1234 (python3 -m x) S 1 1234 1234 0 -1 4194560 5000 0 0 0 250 50 0 0 20 0 3 0"
    assert parse_stat(stat, ticks_per_second=100) == 3.0
    assert parse_rss("Name:\tpython3\nVmRSS:\t  20480 kB\nThreads: 3\n") == 20480 * 1024
    with pytest.raises(ValueError, match="VmRSS"):
        parse_rss("Name: x\n")
    system = "cpu  100 5 50 1000 20 1 2 3 0 0\ncpu0 50 2 25 500 10 0 1 1 0 0\n"
    assert parse_system_stat(system, ticks_per_second=100) == pytest.approx((1.55, 0.03, 0.03))


def test_listening_sockets_are_found_by_port() -> None:
    table = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid "
        " timeout inode\n"
        "   0: 0100007F:13BA 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 4242\n"
        "   1: 0100007F:13BA 0100007F:9C40 01 00000000:00000000 00:00000000 00000000 0 0 4243\n"
        "   2: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 4244\n"
    )
    assert listening_inodes(table, 5050) == {"4242"}
    assert listening_inodes(table, 5051) == set()


async def test_our_own_listening_socket_is_not_mistaken_for_a_server() -> None:
    import asyncio

    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert find_listening_pid(port) is None  # this process is skipped
    finally:
        server.close()
        await server.wait_closed()


def test_the_server_process_is_found_by_its_listening_port() -> None:
    import subprocess
    import sys

    code = (
        "import socket, sys; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen();"
        "print(s.getsockname()[1], flush=True); sys.stdin.read()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        assert find_listening_pid(port) == child.pid
    finally:
        child.kill()
        child.wait()


# -- TwiML ----------------------------------------------------------------------------------


def test_stream_twiml_url_and_parameters() -> None:
    text = twiml.connect_stream("wss://x.example/media-stream", {"callbackId": "c1", "token": "t"})
    assert parse_stream_twiml(text) == (
        "wss://x.example/media-stream",
        {"callbackId": "c1", "token": "t"},
    )
    from caller_engine.replay.driver import ReplayError

    with pytest.raises(ReplayError):
        parse_stream_twiml(twiml.hangup())


# -- report ---------------------------------------------------------------------------------


def _level(calls: int, p99: float, lost: int = 0, cpu: float = 0.1) -> dict[str, Any]:
    direction = {"count": 10, "p50": 1.0, "p95": 2.0, "p99": p99, "max": 9.0, "sent": 10}
    return {
        "concurrency": calls,
        "callerToModel": {**direction, "lost": lost},
        "modelToCaller": {**direction, "lost": 0, "jitter": {"count": 9, "p99": 0.5}},
        "greeting": {"count": 2, "p50": 5.0, "p99": 8.0},
        "speechStartedToClear": {"count": 2, "p50": 1.0, "p99": 2.0},
        "toolRoundTrip": {"count": 0},
        "server": {"cpuPercent": cpu * calls, "cpuPercentPerCall": cpu},
        "driver": {"cpuPercent": 95.0, "loopLagMs": {"p99": 1.0}},
        "machine": {"otherProcessesCpuPercent": 40.0},
    }


def test_targets_and_tables() -> None:
    levels = [_level(1, 0.5), _level(100, 4.0, lost=1), _level(200, 25.0, cpu=0.3)]
    targets = {(t["calls"], t["target"]): t["met"] for t in evaluate_targets(levels)}
    assert targets[(100, "caller→model p99 ms")] is True
    assert targets[(100, "frame loss caller→model")] is False
    assert targets[(200, "model→caller p99 ms")] is False
    assert targets[(200, "server CPU % of one core per call")] is False
    assert (1, "caller→model p99 ms") not in targets
    table = latency_table(levels)
    assert "| calls |" in table.splitlines()[0]
    assert "1.00 / 2.00 / 4.00 / 9.00" in table
    assert "1/10" in table  # loss in
    assert len(format_tables(levels).splitlines()) == 2 * (2 + len(levels)) + 1
    notes = caveats(levels)
    assert any("other processes" in n for n in notes)
    assert any("load driver" in n for n in notes)


# -- captures -------------------------------------------------------------------------------


def test_capture_written_by_the_bridge_replays_with_its_timing(tmp_path: Path) -> None:
    capture = MediaCapture.open(tmp_path / "caps", "cb:1/x", "CA1")
    assert capture.enabled and capture.path is not None
    frames = [mulaw.tone(20, 300.0 + i) for i in range(3)]
    for i, frame in enumerate(frames):
        capture.frame(base64.b64encode(frame).decode(), i * 20)
        time.sleep(0.03)
    capture.close()
    capture.close()  # idempotent
    assert capture.path.stat().st_mode & 0o777 == 0o600
    assert "/" not in capture.path.name and capture.path.name.startswith("cb_1_x-")
    loaded = load_capture(capture.path)
    assert loaded.callback_id == "cb:1/x"
    assert loaded.frames == frames
    assert loaded.offsets[0] == 0.0
    assert 0.025 <= loaded.offsets[1] - loaded.offsets[0] < 0.5
    assert loaded.audio(max_duration_s=0.001).frames == frames[:1]
    assert find_captures([tmp_path / "caps"]) == [capture.path]


def test_capture_is_off_without_a_directory(tmp_path: Path) -> None:
    capture = MediaCapture.open(None, "cb-1")
    assert not capture.enabled
    capture.frame("AAAA", 0)
    capture.close()
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    assert not MediaCapture.open(blocked, "cb-1").enabled


def test_bad_capture_files_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"v":99}\n')
    with pytest.raises(CaptureError, match="version"):
        load_capture(bad)
    bad.write_text('{"v":1}\n{"t":0,"p":"***"}\n')
    with pytest.raises(CaptureError, match="frame"):
        load_capture(bad)
    with pytest.raises(CaptureError):
        find_captures([tmp_path / "missing"])


def test_plot_draws_a_png_or_names_the_missing_extra(tmp_path: Path) -> None:
    from caller_engine.replay.plot import PlotUnavailable, available, plot_latency

    samples = {"callerToModel": [0.2, 0.3, 1.5], "modelToCaller": [0.4], "greeting": []}
    path = tmp_path / "latency.png"
    if available():
        plot_latency([(1, samples), (50, samples)], path)
        assert path.read_bytes().startswith(b"\x89PNG")
    else:
        with pytest.raises(PlotUnavailable, match=r"caller-engine\[plot\]"):
            plot_latency([(1, samples)], path)


def test_turn_cycle_says_the_greeting_once_and_repeats_the_answers() -> None:
    from caller_engine.replay.scenario import MarkedScript, TurnCycle

    cycle = TurnCycle(tool="send_sms")
    plan = cycle.responses()
    assert [p.audio_ms for p in plan] == [2000, 1000, 1000]
    assert plan[1].tool_calls and not plan[2].tool_calls
    script = MarkedScript(plan=plan, repeat_from=cycle.repeat_from)
    texts = [script.next_response().text for _ in range(5)]
    assert texts == [p.text for p in (plan[0], plan[1], plan[2], plan[1], plan[2])]
    pattern = cycle.caller_pattern(12_000)
    starts = [i * 20 for i, loud in enumerate(pattern) if loud and (i == 0 or not pattern[i - 1])]
    assert starts == [3000, 7000, 11000]
    assert sum(pattern[150:180]) == 30  # 3000..3600 ms: the caller speaks for 600 ms


def test_floor_comparison_ratios_and_table() -> None:
    from caller_engine.replay.floor import compare, format_comparison

    product = {
        "concurrency": 100,
        "server": {"cpuPercentPerCall": 0.3, "rssMb": 90.0},
        "callerToModel": {"p99": 4.0},
        "modelToCaller": {"p99": 6.0},
        "wholeRun": {"callerToModel": {"max": 50.0}, "modelToCaller": {"max": 20.0}},
        "callsWithLoss": 1,
        "maxLostInOneCall": 3,
    }
    floor = {
        "concurrency": 100,
        "server": {"cpuPercentPerCall": 0.25, "rssMb": 45.0},
        "callerToModel": {"p99": 2.0},
        "modelToCaller": {"p99": 3.0},
        "wholeRun": {"callerToModel": {"max": 10.0}, "modelToCaller": {"max": 0.0}},
        "callsWithLoss": 0,
        "maxLostInOneCall": 0,
    }
    row = compare(product, floor)
    assert row["cpuPercentPerCall"]["ratio"] == 1.2
    assert row["rssMb"]["ratio"] == 2.0
    assert row["modelToCallerMaxWholeLevel"]["ratio"] is None  # nothing to divide by
    assert row["callsWithLoss"] == {"product": 1, "floor": 0}
    table = format_comparison([row], "no tool call")
    assert "| 100 | 0.3 / 0.25 (1.20×) |" in table
