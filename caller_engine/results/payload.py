"""The bytes of a result as POSTed (and signed). Pure."""

from __future__ import annotations

import orjson

from caller_engine.calls.result import CallResult


def encode_result(result: CallResult) -> bytes:
    return orjson.dumps(result.model_dump(mode="json"))
