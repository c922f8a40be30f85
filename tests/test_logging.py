"""Call-scoped logging: one JSON object per line in production, ids on every call line."""

from __future__ import annotations

import io
from collections.abc import Iterator

import orjson
import pytest

from caller_engine.logging import call_logger, setup_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    setup_logging("development", "DEBUG")


@pytest.mark.usefixtures("restore_logging")
def test_production_lines_are_json_with_call_ids() -> None:
    out = io.StringIO()
    setup_logging("production", "INFO", stream=out)
    call_logger("cb-7", "CA7", "MZ7").bind(tool="send_sms").info("tool {} ok", "send_sms")
    call_logger("cb-8").warning("no stream yet")
    first, second = (orjson.loads(line) for line in out.getvalue().splitlines())
    assert first["msg"] == "tool send_sms ok" and first["level"] == "INFO"
    assert (first["callbackId"], first["callSid"], first["streamSid"]) == ("cb-7", "CA7", "MZ7")
    assert first["tool"] == "send_sms"
    assert second["callbackId"] == "cb-8" and second["callSid"] == "-"


@pytest.mark.usefixtures("restore_logging")
def test_development_lines_are_readable_with_ids() -> None:
    out = io.StringIO()
    setup_logging("development", "INFO", stream=out)
    call_logger("cb-9", "CA9").info("stream started")
    line = out.getvalue()
    assert "[callbackId=cb-9 callSid=CA9]" in line and "stream started" in line
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(line)
