"""Microbenchmark of the conversion path: µs per 20 ms frame in each direction.

`python -m caller_engine.audio.bench` prints it; `caller-engine bench` reports it next to
the per-call figures. The base64 passthrough of μ-law providers is measured beside it as the
baseline (what forwarding a frame costs when nothing is converted).
"""

from __future__ import annotations

import base64
import math
import time

import numpy as np

from caller_engine.audio.convert import CallerToPcm, PcmToCaller

FRAME_MS = 20


def _tone(rate: int, ms: int, freq: float = 1000.0) -> bytes:
    n = rate * ms // 1000
    t = np.arange(n) / rate
    return (np.sin(2 * math.pi * freq * t) * 8000).astype("<i2").tobytes()


def measure(
    frames: int = 20_000, input_rate: int = 16000, output_rate: int = 24000
) -> dict[str, float]:
    """µs per 20 ms frame: caller→provider, provider→caller, and the passthrough baseline."""
    caller = base64.b64encode(b"\x55" * (8 * FRAME_MS)).decode()
    provider = base64.b64encode(_tone(output_rate, FRAME_MS))
    inbound = CallerToPcm(input_rate)
    outbound = PcmToCaller(output_rate)
    for _ in range(200):
        inbound.convert(caller)
        outbound.convert(provider)
    start = time.perf_counter()
    for _ in range(frames):
        inbound.convert(caller)
    mid = time.perf_counter()
    for _ in range(frames):
        outbound.convert(provider)
    end = time.perf_counter()
    for _ in range(frames):
        # what a μ-law provider does with a frame: the string goes out as it came
        caller.encode("ascii")
    passthrough = time.perf_counter() - end
    return {
        "callerToProviderUs": (mid - start) / frames * 1e6,
        "providerToCallerUs": (end - mid) / frames * 1e6,
        "passthroughUs": passthrough / frames * 1e6,
    }


def main() -> None:
    figures = measure()
    print(
        "conversion per 20 ms frame: "
        f"caller→provider (μ-law 8 kHz → PCM16 16 kHz) {figures['callerToProviderUs']:.1f} µs, "
        f"provider→caller (PCM16 24 kHz → μ-law 8 kHz) {figures['providerToCallerUs']:.1f} µs; "
        f"μ-law passthrough {figures['passthroughUs']:.2f} µs"
    )


if __name__ == "__main__":
    main()
