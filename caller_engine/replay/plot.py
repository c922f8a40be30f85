"""Latency distributions per direction and concurrency level as a PNG (matplotlib, optional:
`pip install 'caller-engine[plot]'`)."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PANELS = (
    ("callerToModel", "caller → model (bridge-added)"),
    ("modelToCaller", "model → caller (bridge-added)"),
    ("speechStartedToClear", "speech_started → clear"),
    ("greeting", "greeting (stream start → first audio)"),
)
MISSING = (
    "--plot needs matplotlib, an optional extra: pip install 'caller-engine[plot]' "
    "(or pip install 'matplotlib>=3.8')"
)


class PlotUnavailable(RuntimeError):
    pass


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def ccdf(values: Sequence[float]) -> tuple[list[float], list[float]]:
    """(sorted values, fraction of samples above each): the tail on a log scale."""
    ordered = sorted(values)
    count = len(ordered)
    return ordered, [max((count - i - 1) / count, 0.5 / count) for i in range(count)]


def plot_latency(levels: Sequence[tuple[int, dict[str, list[float]]]], path: Path) -> None:
    """One panel per measurement, one line per concurrency level (complementary CDF)."""
    if not available():
        raise PlotUnavailable(MISSING)
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")

    fig, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    for ax, (key, title) in zip(axes.flat, PANELS, strict=True):
        drawn = False
        for concurrency, samples in levels:
            values = [v for v in samples.get(key, []) if v > 0]
            if not values:
                continue
            xs, ys = ccdf(values)
            label = f"{concurrency} call" + ("s" if concurrency != 1 else "")
            ax.step(xs, ys, where="post", label=label)
            drawn = True
        ax.set_title(title)
        ax.set_xlabel("ms")
        ax.set_ylabel("fraction of samples slower")
        if drawn:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("caller-engine replay: latency distributions")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
