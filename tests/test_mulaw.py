from __future__ import annotations

import math
import warnings
from array import array

import pytest

from caller_engine.audio import mulaw


def test_decode_anchor_values() -> None:
    assert mulaw.decode(bytes([0x00, 0x80, 0xFF, 0x7F])).tolist() == [-32124, 32124, 0, 0]
    assert mulaw.DECODE_TABLE[0x7E] == -8
    assert len(mulaw.DECODE_TABLE) == 256


def test_encode_anchor_values() -> None:
    assert mulaw.encode([0, 32767, -32768, 8, -8]) == bytes([0xFF, 0x80, 0x00, 0xFE, 0x7E])


def test_encode_accepts_little_endian_pcm_bytes() -> None:
    samples = array("h", [0, 1000, -1000, 32767])
    assert mulaw.encode(samples.tobytes()) == mulaw.encode(samples)


def test_round_trip_is_stable_for_every_code() -> None:
    codes = bytes(range(256))
    once = mulaw.decode(codes)
    again = mulaw.decode(mulaw.encode(once))
    assert again == once


def test_matches_the_reference_codec() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    every_sample = array("h", range(-32768, 32768)).tobytes()
    assert mulaw.encode(every_sample) == audioop.lin2ulaw(every_sample, 2)
    codes = bytes(range(256))
    assert mulaw.decode_to_bytes(codes) == audioop.ulaw2lin(codes, 2)


def test_silence_and_tone() -> None:
    assert mulaw.silence(20) == b"\xff" * 160
    assert mulaw.silence(-5) == b""
    tone = mulaw.tone(100)
    assert len(tone) == 800
    assert tone == mulaw.tone(100)  # deterministic
    assert mulaw.tone(100, freq=300.0) != tone
    assert mulaw.duration_ms(tone) == 100.0
    assert mulaw.duration_ms(16) == 2.0


def test_frame_energy_tracks_amplitude() -> None:
    assert mulaw.frame_energy(b"") == 0.0
    assert mulaw.frame_energy(mulaw.silence(20)) == 0.0
    quiet = mulaw.frame_energy(mulaw.tone(20, amplitude=500))
    loud = mulaw.frame_energy(mulaw.tone(20, amplitude=8000))
    # mean |sin| over whole periods is 2/pi of the peak; μ-law quantisation costs a few percent
    assert loud == pytest.approx(8000 * 2 / math.pi, rel=0.05)
    assert 0 < quiet < loud / 10
