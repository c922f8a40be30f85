"""The event loop the server runs on: uvloop when installed, else asyncio's own."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop (libuv transports: fewer cycles per socket read and write) unless
    it is missing or CALLER_ENGINE_LOOP=asyncio."""
    if os.environ.get("CALLER_ENGINE_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
