"""Inbound media captures for load replay (MEDIA_CAPTURE_DIR; off by default).

A capture holds the caller's audio of one call as Twilio streamed it, so it is personal
data: keep the directory private (files are created 0600) and delete captures when done.

The file is JSON lines, one per event, small enough to read by eye:

    {"v":1,"callbackId":"cb-1","callSid":"CA…","encoding":"audio/x-mulaw","sampleRate":8000,
     "startedAt":"2025-01-31T10:00:00.000Z"}
    {"t":0.0,"ts":0,"p":"<base64 μ-law>"}          # t: ms since the capture opened (arrival)
    {"t":20.4,"ts":20,"p":"…"}                      # ts: Twilio's media timestamp (ms)
    {"end":61234.5,"frames":3061}

Usage from the call session: `capture = MediaCapture.open(settings.media_capture_dir,
callback_id, call_sid)` at stream start, `capture.frame(media.payload, media.timestamp)` per
inbound media frame, `capture.close()` at the end. With no directory configured `open`
returns a disabled capture whose methods return at once; check `capture.enabled` to skip
even the call. Writes go through a 64 KiB buffer (one write per ~3 s of audio); failures
are logged once and disable the capture, never the call.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import orjson
from loguru import logger

FORMAT_VERSION = 1
SUFFIX = ".jsonl"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_BUFFER = 64 * 1024


def capture_filename(callback_id: str, opened: datetime) -> str:
    stamp = opened.strftime("%Y%m%dT%H%M%S")
    safe = _UNSAFE.sub("_", callback_id)[:100] or "call"
    return f"{safe}-{stamp}-{secrets.token_hex(3)}{SUFFIX}"


def frame_line(t_ms: float, timestamp_ms: int, payload_b64: str) -> str:
    """One frame line; base64 needs no JSON escaping."""
    return f'{{"t":{t_ms:.1f},"ts":{int(timestamp_ms)},"p":"{payload_b64}"}}\n'


class MediaCapture:
    __slots__ = ("_file", "_frames", "_opened_at", "path")

    def __init__(self, file: TextIO | None = None, path: Path | None = None) -> None:
        self._file = file
        self._opened_at = time.monotonic()
        self._frames = 0
        self.path = path

    @property
    def enabled(self) -> bool:
        return self._file is not None

    @classmethod
    def open(
        cls, directory: str | os.PathLike[str] | None, callback_id: str, call_sid: str | None = None
    ) -> MediaCapture:
        """A capture writing to a new file in `directory`; disabled when it is None/empty
        or the file cannot be created."""
        if not directory:
            return cls()
        opened = datetime.now(UTC)
        try:
            folder = Path(directory)
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = folder / capture_filename(callback_id, opened)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            file = os.fdopen(fd, "w", buffering=_BUFFER, encoding="ascii")
            header = {
                "v": FORMAT_VERSION,
                "callbackId": callback_id,
                "callSid": call_sid,
                "encoding": "audio/x-mulaw",
                "sampleRate": 8000,
                "startedAt": opened.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            }
            file.write(orjson.dumps(header).decode() + "\n")
        except OSError as exc:
            logger.warning("media capture disabled for {}: {}", callback_id, exc)
            return cls()
        return cls(file, path)

    def frame(self, payload_b64: str, timestamp_ms: int) -> None:
        """Record one inbound media frame (the base64 payload as Twilio sent it)."""
        file = self._file
        if file is None:
            return
        t_ms = (time.monotonic() - self._opened_at) * 1000.0
        try:
            file.write(frame_line(t_ms, timestamp_ms, payload_b64))
        except (OSError, ValueError) as exc:
            self._fail(exc)
            return
        self._frames += 1

    def close(self) -> None:
        file, self._file = self._file, None
        if file is None:
            return
        end_ms = round((time.monotonic() - self._opened_at) * 1000.0, 1)
        try:
            file.write(orjson.dumps({"end": end_ms, "frames": self._frames}).decode() + "\n")
            file.close()
        except (OSError, ValueError) as exc:
            logger.warning("media capture {} could not be closed: {}", self.path, exc)

    def _fail(self, exc: Exception) -> None:
        logger.warning("media capture {} stopped: {}", self.path, exc)
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError, ValueError):
                file.close()
