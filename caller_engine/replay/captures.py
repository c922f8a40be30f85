"""Reading media captures (written by `bridge.capture` when MEDIA_CAPTURE_DIR is set) back
as caller audio with its original timing."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path

import orjson

from caller_engine.bridge.capture import FORMAT_VERSION, SUFFIX
from caller_engine.replay.scenario import CallerAudio, find_utterances


class CaptureError(ValueError):
    """A file that is not a readable media capture."""


@dataclass(frozen=True)
class Capture:
    path: Path
    callback_id: str
    frames: list[bytes]
    offsets: list[float]  # seconds from the first frame, as the frames arrived

    def audio(self, max_duration_s: float | None = None) -> CallerAudio:
        """The capture as caller audio, cut at `max_duration_s` when given."""
        frames, offsets = self.frames, self.offsets
        if max_duration_s is not None:
            keep = sum(1 for at in offsets if at < max_duration_s)
            frames, offsets = frames[:keep], offsets[:keep]
        return CallerAudio(frames, offsets, find_utterances(frames), f"capture:{self.path.name}")


def parse_capture(text: str, path: Path) -> Capture:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise CaptureError(f"{path}: empty")
    try:
        header = orjson.loads(lines[0])
    except orjson.JSONDecodeError as exc:
        raise CaptureError(f"{path}: header is not JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("v") != FORMAT_VERSION:
        raise CaptureError(f"{path}: not a version {FORMAT_VERSION} media capture")
    frames: list[bytes] = []
    arrivals: list[float] = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise CaptureError(f"{path}:{number}: not JSON") from None
        if "end" in entry:
            break
        try:
            frames.append(base64.b64decode(entry["p"], validate=True))
            arrivals.append(float(entry["t"]) / 1000.0)
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise CaptureError(f"{path}:{number}: not a frame line") from None
    if not frames:
        raise CaptureError(f"{path}: no frames")
    first = arrivals[0]
    offsets = [max(0.0, at - first) for at in arrivals]
    return Capture(path, str(header.get("callbackId", "")), frames, offsets)


def load_capture(path: Path) -> Capture:
    return parse_capture(path.read_text(encoding="ascii"), path)


def find_captures(paths: list[Path]) -> list[Path]:
    """Capture files named directly or found (sorted) in the given directories."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.name.endswith(SUFFIX)))
        elif path.exists():
            found.append(path)
        else:
            raise CaptureError(f"{path}: no such file or directory")
    if not found:
        raise CaptureError("no capture files found in " + ", ".join(str(p) for p in paths))
    return found
