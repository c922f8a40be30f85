"""The conversion path: μ-law tables, the streaming resampler and both per-call directions."""

from __future__ import annotations

import base64
import math

import numpy as np
import numpy.typing as npt
import pytest

from caller_engine.audio import mulaw
from caller_engine.audio.bench import measure
from caller_engine.audio.codec import pcm16_to_ulaw, ulaw_to_pcm16
from caller_engine.audio.convert import CallerToPcm, PcmToCaller

Floats = npt.NDArray[np.float64]


def sine(freq: float, rate: int, seconds: float, amplitude: float = 8000.0) -> Floats:
    t = np.arange(round(rate * seconds)) / rate
    return amplitude * np.sin(2 * math.pi * freq * t)


def fit(signal: Floats, freq: float, rate: int) -> tuple[float, Floats]:
    """Least-squares fit of a sine at `freq` (any phase and amplitude): SNR in dB, residual."""
    t = np.arange(len(signal)) / rate
    basis = np.stack([np.sin(2 * math.pi * freq * t), np.cos(2 * math.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, signal, rcond=None)
    residual = signal - basis @ coef
    snr = 10 * math.log10(float(np.mean((basis @ coef) ** 2)) / float(np.mean(residual**2)))
    return snr, residual


def dominant_hz(signal: Floats, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.argmax(spectrum) * rate / len(signal))


def test_tables_match_the_reference_coder() -> None:
    every = bytes(range(256))
    assert ulaw_to_pcm16(every).tolist() == list(mulaw.decode(every))
    samples = np.arange(-32768, 32768, dtype=np.int16)
    assert pcm16_to_ulaw(samples) == mulaw.encode(samples.astype("<i2").tobytes())


def test_caller_tone_reaches_the_provider_at_16k_clean_and_whole() -> None:
    seconds = 60.0
    ulaw = mulaw.encode(np.round(sine(1000, 8000, seconds)).astype(np.int16).tolist())
    inbound = CallerToPcm(16000)
    out = bytearray()
    frame = 160  # 20 ms
    for offset in range(0, len(ulaw), frame):
        payload = base64.b64encode(ulaw[offset : offset + frame]).decode()
        out += base64.b64decode(inbound.convert(payload))
    assert inbound._resampler is not None
    out += inbound._resampler.flush().astype("<i2").tobytes()
    pcm = np.frombuffer(bytes(out), dtype="<i2").astype(np.float64)
    assert len(pcm) == 16000 * seconds  # no sample lost or repeated over 3000 frames
    steady = pcm[1600:-1600]
    assert dominant_hz(steady[:16000], 16000) == pytest.approx(1000, abs=2)
    snr, residual = fit(steady, 1000, 16000)
    assert snr >= 30
    # no click at frame edges: the error there is no larger than anywhere else
    edges = residual[np.arange(0, len(residual), 320)]
    assert np.max(np.abs(edges)) <= 1.5 * np.percentile(np.abs(residual), 99.9)


def test_provider_tone_reaches_the_caller_at_8k_clean_and_whole() -> None:
    seconds = 60.0
    pcm24 = np.round(sine(1000, 24000, seconds)).astype("<i2").tobytes()
    outbound = PcmToCaller(24000)
    out = bytearray()
    frame = 960  # 20 ms of 24 kHz PCM16
    for offset in range(0, len(pcm24), frame):
        payload = base64.b64encode(pcm24[offset : offset + frame])
        out += base64.b64decode(outbound.convert(payload))
    out += base64.b64decode(outbound.flush())
    assert len(out) == 8000 * seconds
    decoded = ulaw_to_pcm16(bytes(out)).astype(np.float64)
    steady = decoded[800:-800]
    assert dominant_hz(steady[:8000], 8000) == pytest.approx(1000, abs=2)
    snr, residual = fit(steady, 1000, 8000)
    assert snr >= 30
    edges = residual[np.arange(0, len(residual), 160)]
    assert np.max(np.abs(edges)) <= 1.5 * np.percentile(np.abs(residual), 99.9)


def test_chunks_of_any_size_join_even_across_a_split_sample() -> None:
    pcm24 = np.round(sine(1000, 24000, 2.0)).astype("<i2").tobytes()
    whole = PcmToCaller(24000)
    expected = whole.convert_bytes(pcm24) + base64.b64decode(whole.flush())
    pieces = PcmToCaller(24000)
    out = bytearray()
    rng = np.random.default_rng(7)
    offset = 0
    while offset < len(pcm24):
        size = int(rng.integers(1, 3000))  # odd sizes split samples
        out += pieces.convert_bytes(pcm24[offset : offset + size])
        offset += size
    out += base64.b64decode(pieces.flush())
    assert len(out) == len(expected)
    # the filter's arithmetic rounds a little differently by chunk size: at most one step
    diff = ulaw_to_pcm16(bytes(out)).astype(np.int32) - ulaw_to_pcm16(expected)
    assert np.max(np.abs(diff)) <= 256


def test_downsampling_does_not_alias() -> None:
    # 5 kHz is above the 4 kHz Nyquist of the caller side: it must be filtered out, not folded
    # to 3 kHz.
    loud = np.round(sine(5000, 24000, 1.0, 16000)).astype("<i2").tobytes()
    outbound = PcmToCaller(24000)
    out = outbound.convert_bytes(loud) + base64.b64decode(outbound.flush())
    level = np.sqrt(np.mean(ulaw_to_pcm16(out)[800:-800].astype(np.float64) ** 2))
    assert 20 * math.log10(max(level, 1.0) / (16000 / math.sqrt(2))) < -50


def test_reset_drops_held_audio() -> None:
    outbound = PcmToCaller(24000)
    outbound.convert_bytes(np.full(480, 9000, dtype="<i2").tobytes())
    outbound.reset()
    tail = base64.b64decode(outbound.flush())
    assert np.max(np.abs(ulaw_to_pcm16(tail)), initial=0) < 64


def test_8k_input_is_a_table_lookup_only() -> None:
    inbound = CallerToPcm(8000)
    ulaw = mulaw.tone(20, 1000)
    pcm = base64.b64decode(inbound.convert(base64.b64encode(ulaw).decode()))
    assert pcm == mulaw.decode_to_bytes(ulaw)


def test_microbenchmark_reports_each_direction() -> None:
    figures = measure(frames=200)
    assert set(figures) == {"callerToProviderUs", "providerToCallerUs", "passthroughUs"}
    assert all(value > 0 for value in figures.values())
