"""Distribution summaries: percentiles, a compact log-scale histogram, sequence accounting.

Pure functions over plain lists; values are milliseconds unless said otherwise.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

PERCENTILES = (50, 95, 99)
# Histogram bucket edges: 10 per decade from 10 µs to 100 s.
_HIST_LOW_MS = 0.01
_HIST_PER_DECADE = 10
_HIST_DECADES = 7


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """The `pct` percentile of ascending values by linear interpolation (numpy's default)."""
    if not sorted_values:
        raise ValueError("no values")
    if not 0 <= pct <= 100:
        raise ValueError("pct must be within 0..100")
    rank = (len(sorted_values) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = rank - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


def summarize(values: Iterable[float], digits: int = 3) -> dict[str, Any]:
    """count, mean, p50/p95/p99 and max of `values` (count 0 and no figures when empty)."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}
    out: dict[str, Any] = {
        "count": len(ordered),
        "mean": round(sum(ordered) / len(ordered), digits),
    }
    for pct in PERCENTILES:
        out[f"p{pct}"] = round(percentile(ordered, pct), digits)
    out["max"] = round(ordered[-1], digits)
    return out


def histogram_edges() -> list[float]:
    count = _HIST_PER_DECADE * _HIST_DECADES
    return [_HIST_LOW_MS * 10 ** (i / _HIST_PER_DECADE) for i in range(count + 1)]


def histogram(values: Iterable[float]) -> dict[str, Any]:
    """Counts per log-scale bucket, kept sparse: {"edgesMs": [low, high] per bucket used,
    "counts": [...]}; values below the first edge land in the first bucket, above the last
    in the last."""
    edges = histogram_edges()
    last = len(edges) - 2
    counts: dict[int, int] = {}
    for value in values:
        if value <= edges[0]:
            index = 0
        else:
            index = int(math.log10(value / _HIST_LOW_MS) * _HIST_PER_DECADE)
            index = min(max(index, 0), last)
        counts[index] = counts.get(index, 0) + 1
    used = sorted(counts)
    return {
        "edgesMs": [[round(edges[i], 6), round(edges[i + 1], 6)] for i in used],
        "counts": [counts[i] for i in used],
    }


def jitter(transits: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """(time, |Δ transit|) between consecutive packets given as (time, transit): RFC 3550's
    D(i-1, i), dated by the later packet."""
    return [(b[0], abs(b[1] - a[1])) for a, b in itertools.pairwise(transits)]


@dataclass
class SequenceCheck:
    """Arrival accounting of one numbered stream: duplicates, reordering, what arrived."""

    highest: int = -1
    received: int = 0
    duplicates: int = 0
    reordered: int = 0

    def __post_init__(self) -> None:
        self._seen: set[int] = set()

    def arrive(self, seq: int) -> bool:
        """Record one arrival; False for a duplicate."""
        if seq in self._seen:
            self.duplicates += 1
            return False
        self._seen.add(seq)
        self.received += 1
        if seq < self.highest:
            self.reordered += 1
        else:
            self.highest = seq
        return True

    def has(self, seq: int) -> bool:
        return seq in self._seen


def ms(seconds: float) -> float:
    return seconds * 1000.0
