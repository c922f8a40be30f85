"""The replay report: JSON document, the tables printed at the end, and the bench targets.

Tables are Markdown, so the bench output can be pasted into the README as it is.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

REPORT_VERSION = 1


def machine_info() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "processor": _cpu_model(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def build_report(
    levels: Sequence[dict[str, Any]], config: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return {
        "version": REPORT_VERSION,
        "createdAt": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "machine": machine_info(),
        "config": config,
        **extra,
        "levels": list(levels),
    }


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")


# -- tables --------------------------------------------------------------------------------


def _num(value: Any) -> str:
    if not isinstance(value, int | float):
        return "–"
    if value == 0:
        return "0"
    if abs(value) < 10:
        return f"{value:.2f}"
    if abs(value) < 1000:
        return f"{value:.1f}"
    return f"{value:.0f}"


def _pcts(summary: dict[str, Any] | None, keys: Sequence[str]) -> str:
    summary = summary or {}
    if not summary.get("count"):
        return "–"
    return " / ".join(_num(summary.get(key)) for key in keys)


def _loss(direction: dict[str, Any]) -> str:
    sent = direction.get("sent", 0)
    if not sent:
        return "–"
    return f"{direction.get('lost', 0)}/{sent}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    return "\n".join(lines)


FULL = ("p50", "p95", "p99", "max")
SHORT = ("p50", "p99")


def latency_table(levels: Sequence[dict[str, Any]]) -> str:
    header = [
        "calls",
        "caller→model ms p50/p95/p99/max",
        "model→caller ms p50/p95/p99/max",
        "jitter p99",
        "loss in",
        "loss out",
        "greeting p50/p99",
        "speech_started→clear p50/p99",
        "tool round trip p50/p99",
    ]
    rows = []
    for level in levels:
        inbound = level.get("callerToModel", {})
        outbound = level.get("modelToCaller", {})
        rows.append(
            [
                str(level.get("concurrency")),
                _pcts(inbound, FULL),
                _pcts(outbound, FULL),
                _num((outbound.get("jitter") or {}).get("p99")),
                _loss(inbound),
                _loss(outbound),
                _pcts(level.get("greeting"), SHORT),
                _pcts(level.get("speechStartedToClear"), SHORT),
                _pcts(level.get("toolRoundTrip"), SHORT),
            ]
        )
    return _table(header, rows)


def resource_table(levels: Sequence[dict[str, Any]]) -> str:
    header = [
        "calls",
        "server CPU % (one core)",
        "CPU % per call",
        "RSS MB",
        "RSS MB per call",
        "whole run p99/max ms in",
        "whole run p99/max ms out",
        "turn latency p50/p99 ms",
        "failed calls",
        "driver CPU %",
        "driver lag p99 ms",
        "other processes CPU %",
    ]
    rows = []
    for level in levels:
        server = level.get("server") or {}
        driver = level.get("driver") or {}
        whole = level.get("wholeRun") or {}
        rows.append(
            [
                str(level.get("concurrency")),
                _num(server.get("cpuPercent")),
                _num(server.get("cpuPercentPerCall")),
                _num(server.get("rssMb")),
                _num(server.get("rssMbPerCall")),
                _pcts(whole.get("callerToModel"), ("p99", "max")),
                _pcts(whole.get("modelToCaller"), ("p99", "max")),
                _pcts(level.get("turnLatency"), SHORT),
                str(level.get("failedCalls", 0)),
                _num(driver.get("cpuPercent")),
                _num((driver.get("loopLagMs") or {}).get("p99")),
                _num((level.get("machine") or {}).get("otherProcessesCpuPercent")),
            ]
        )
    return _table(header, rows)


def format_tables(levels: Sequence[dict[str, Any]]) -> str:
    return latency_table(levels) + "\n\n" + resource_table(levels)


# -- bench targets -------------------------------------------------------------------------


def _target(level: dict[str, Any], name: str, value: Any, limit: float) -> dict[str, Any]:
    met = isinstance(value, int | float) and value <= limit
    return {
        "calls": level.get("concurrency"),
        "target": name,
        "value": value,
        "limit": limit,
        "met": met,
    }


def evaluate_targets(levels: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets for the one-core bench, checked against the levels that ran."""
    out: list[dict[str, Any]] = []
    for level in levels:
        calls = level.get("concurrency")
        inbound = level.get("callerToModel", {})
        outbound = level.get("modelToCaller", {})
        if calls in (100, 200):
            out.append(_target(level, "frame loss caller→model", inbound.get("lost"), 0))
            out.append(_target(level, "frame loss model→caller", outbound.get("lost"), 0))
        if calls == 100:
            out.append(_target(level, "caller→model p99 ms", inbound.get("p99"), 5))
            out.append(_target(level, "model→caller p99 ms", outbound.get("p99"), 5))
            clear = level.get("speechStartedToClear", {})
            out.append(_target(level, "speech_started→clear p99 ms", clear.get("p99"), 5))
            out.append(_target(level, "greeting p99 ms", level.get("greeting", {}).get("p99"), 20))
        if calls == 200:
            out.append(_target(level, "caller→model p99 ms", inbound.get("p99"), 20))
            out.append(_target(level, "model→caller p99 ms", outbound.get("p99"), 20))
        if calls and calls > 1:
            per_call = (level.get("server") or {}).get("cpuPercentPerCall")
            out.append(_target(level, "server CPU % of one core per call", per_call, 0.2))
    return out


def format_targets(targets: Sequence[dict[str, Any]]) -> str:
    lines = []
    for t in targets:
        # A figure the run could not measure (no barge-in in the turn cycle, say) is no miss.
        measured = isinstance(t["value"], int | float)
        mark = "met   " if t["met"] else "MISSED" if measured else "n/a   "
        lines.append(
            f"  {mark} {t['calls']:>4} calls  {t['target']}: {_num(t['value'])} (≤ {t['limit']:g})"
        )
    return "\n".join(lines)


NOISE_CPU_PERCENT = 10.0
SATURATED_DRIVER_PERCENT = 85.0


def caveats(levels: Sequence[dict[str, Any]]) -> list[str]:
    """Conditions that make a level's latency figures unreliable."""
    notes = []
    for level in levels:
        calls = level.get("concurrency")
        other = (level.get("machine") or {}).get("otherProcessesCpuPercent")
        if isinstance(other, int | float) and other > NOISE_CPU_PERCENT:
            notes.append(
                f"{calls} calls: other processes used {other:.0f} % of a CPU during the "
                "measurement; rerun on a quiet machine"
            )
        steal = (level.get("machine") or {}).get("stealCpuPercent")
        if isinstance(steal, int | float) and steal > NOISE_CPU_PERCENT:
            notes.append(
                f"{calls} calls: the hypervisor took {steal:.0f} % of a CPU (steal time) "
                "during the measurement"
            )
        driver = (level.get("driver") or {}).get("cpuPercent")
        if isinstance(driver, int | float) and driver > SATURATED_DRIVER_PERCENT:
            notes.append(
                f"{calls} calls: the load driver itself used {driver:.0f} % of its CPU, so its "
                "own delays are part of these latencies"
            )
    return notes
