"""Loguru setup: readable lines in development, one JSON object per line in production.

Call-scoped loggers always carry `callbackId`, `callSid` and `streamSid` so that one call
can be followed through the log by any of them.
"""

from __future__ import annotations

import logging as std_logging
import sys
import traceback
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import orjson
from loguru import logger

if TYPE_CHECKING:
    from loguru import Logger, Message, Record

CALL_KEYS = ("callbackId", "callSid", "streamSid")

_DEV_FORMAT = (
    "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{name}</cyan> {extra[_call]}<level>{message}</level>{extra[_fields]}\n{exception}"
)


def call_logger(
    callback_id: str | None = None, call_sid: str | None = None, stream_sid: str | None = None
) -> Logger:
    """A logger bound to one call; unknown ids show as '-'."""
    return logger.bind(
        callbackId=callback_id or "-", callSid=call_sid or "-", streamSid=stream_sid or "-"
    )


def _dev_patch(record: Record) -> None:
    extra = record["extra"]
    ids = [f"{k}={extra[k]}" for k in CALL_KEYS if extra.get(k, "-") != "-"]
    extra["_call"] = f"[{' '.join(ids)}] " if ids else ""
    fields = {k: v for k, v in extra.items() if k not in CALL_KEYS and not k.startswith("_")}
    extra["_fields"] = (" " + " ".join(f"{k}={v}" for k, v in fields.items())) if fields else ""


def _no_patch(record: Record) -> None:
    return None


def _json_sink(stream: TextIO) -> Any:
    def sink(message: Message) -> None:
        record = message.record
        entry: dict[str, Any] = {
            "ts": record["time"].astimezone(UTC).isoformat(timespec="milliseconds"),
            "level": record["level"].name,
            "logger": record["name"],
            "msg": record["message"],
        }
        entry.update({k: v for k, v in record["extra"].items() if not k.startswith("_")})
        if record["exception"] is not None:
            entry["exception"] = "".join(traceback.format_exception(*record["exception"]))
        stream.write(orjson.dumps(entry, default=str).decode() + "\n")
        stream.flush()

    return sink


class _InterceptHandler(std_logging.Handler):
    """Route standard-library logging (aiohttp, twilio) into loguru."""

    def emit(self, record: std_logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, record.getMessage())


def setup_logging(
    environment: str = "development", level: str = "INFO", stream: TextIO | None = None
) -> None:
    out = stream or sys.stderr
    logger.remove()
    if environment == "production":
        logger.configure(patcher=_no_patch)
        logger.add(_json_sink(out), level=level.upper(), backtrace=False, diagnose=False)
    else:
        logger.configure(patcher=_dev_patch)
        logger.add(out, level=level.upper(), format=_DEV_FORMAT, backtrace=False, diagnose=False)
    std_logging.basicConfig(handlers=[_InterceptHandler()], level=std_logging.WARNING, force=True)
    std_logging.getLogger("aiohttp.access").setLevel(std_logging.WARNING)


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
