"""When the call database cannot be used right now: down, unreachable, locked, or full.

Stores raise `StoreUnavailable` for these (never for a bug or a constraint), so callers can
answer 503, queue the write for later (calls.pending) or carry on without it.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import exc as sa

UNAVAILABLE_CLASSES = frozenset({"08", "53", "57"})

P = ParamSpec("P")
T = TypeVar("T")


class StoreUnavailable(Exception):
    """The database cannot be read or written now; the same request may succeed later."""


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database is out of reach rather than that a query is wrong."""
    if isinstance(exc, StoreUnavailable | OSError | TimeoutError):
        return True
    if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
        return True
    # PostgreSQL: connection exception (08), insufficient resources such as a full disk
    # (53), operator intervention: shutting down or starting up (57).
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate[:2] in UNAVAILABLE_CLASSES:
        return True
    # Connection failures, "database is locked", "database or disk is full", shutdowns;
    # sqlite3's own error where the driver raises it outside a statement (our BEGIN).
    return isinstance(
        exc,
        sa.OperationalError | sa.InterfaceError | sa.DisconnectionError | sqlite3.OperationalError,
    )


def reason(exc: BaseException) -> str:
    """A short sentence for the log: the driver's own first line, without SQL."""
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__
    return text[:200]


def guarded(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Turn a store method's loss of its database into StoreUnavailable."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except StoreUnavailable:
            raise
        except Exception as exc:
            if is_unavailable(exc):
                raise StoreUnavailable(reason(exc)) from exc
            raise

    return wrapper
