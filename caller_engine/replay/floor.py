"""The floor the bench measures the product against: `bench/floor_bridge.py`, a minimal
pass-through bridge run at every level right after the product, on the same CPU with the same
calls (no initiate record, no tool calls: it has neither). Figures are compared as ratios
measured side by side in one run, which hold across machines where absolute figures do not.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

FLOOR_SCRIPT = Path("bench") / "floor_bridge.py"


def floor_script(root: Path | None = None) -> Path | None:
    """The floor bridge of the source tree (the bench runs from the repository), if any."""
    path = (root or Path.cwd()) / FLOOR_SCRIPT
    return path if path.is_file() else None


def floor_command(script: Path, port: int, model_url: str, api_key: str) -> list[str]:
    sep = "&" if "?" in model_url else "?"
    return [
        sys.executable,
        str(script),
        *("--port", str(port), "--model-url", f"{model_url}{sep}model=gpt-realtime"),
        *("--api-key", api_key),
    ]


def _get(level: dict[str, Any], *path: str) -> Any:
    value: Any = level
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _ratio(product: Any, floor: Any) -> float | None:
    if isinstance(product, int | float) and isinstance(floor, int | float) and floor > 0:
        return round(product / floor, 2)
    return None


def compare(product: dict[str, Any], floor: dict[str, Any]) -> dict[str, Any]:
    """One level's product figures next to the floor's, with ratios."""
    out: dict[str, Any] = {"calls": product.get("concurrency")}
    for name, path in (
        ("cpuPercentPerCall", ("server", "cpuPercentPerCall")),
        ("rssMb", ("server", "rssMb")),
        ("callerToModelP99", ("callerToModel", "p99")),
        ("modelToCallerP99", ("modelToCaller", "p99")),
        ("callerToModelMaxWholeLevel", ("wholeRun", "callerToModel", "max")),
        ("modelToCallerMaxWholeLevel", ("wholeRun", "modelToCaller", "max")),
    ):
        mine, theirs = _get(product, *path), _get(floor, *path)
        out[name] = {"product": mine, "floor": theirs, "ratio": _ratio(mine, theirs)}
    for name in ("callsWithLoss", "maxLostInOneCall"):
        out[name] = {"product": product.get(name), "floor": floor.get(name)}
    return out


def _cell(entry: dict[str, Any], ratio: bool = True) -> str:
    def num(value: Any) -> str:
        if not isinstance(value, int | float):
            return "–"
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    text = f"{num(entry.get('product'))} / {num(entry.get('floor'))}"
    if ratio and entry.get("ratio") is not None:
        text += f" ({entry['ratio']:.2f}×)"
    return text


def format_comparison(rows: list[dict[str, Any]], product_notes: str) -> str:
    header = [
        "calls",
        "CPU % per call",
        "RSS MB",
        "p99 ms in",
        "p99 ms out",
        "whole-level max ms in",
        "whole-level max ms out",
        "calls with loss",
        "most frames lost by a call",
    ]
    lines = [
        f"Product / floor bridge, side by side in this run (product: {product_notes}):",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for row in rows:
        cells = [
            str(row["calls"]),
            _cell(row["cpuPercentPerCall"]),
            _cell(row["rssMb"]),
            _cell(row["callerToModelP99"]),
            _cell(row["modelToCallerP99"]),
            _cell(row["callerToModelMaxWholeLevel"]),
            _cell(row["modelToCallerMaxWholeLevel"]),
            _cell(row["callsWithLoss"], ratio=False),
            _cell(row["maxLostInOneCall"], ratio=False),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
