"""Statements a call makes every time, compiled once per dialect and run on the driver's cursor.

SQLAlchemy's `Connection.execute` rebuilds an execution context for every statement (cache
key, parameters, result metadata, events): about two thirds of a store change's CPU on
SQLite. The statements every call runs (lock a call's row, write changed columns, insert a
call, queue its result) are fixed, so they are compiled once for the connection's dialect
and run directly on the DBAPI cursor of the same connection and transaction, with the same
bind and result processors SQLAlchemy would apply. A driver error comes out as the
SQLAlchemy exception `Connection.execute` raises for it, so callers see no difference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import ClauseElement, Select
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any] | None
Row = dict[str, Any]


class Prepared:
    """One statement compiled for one dialect: its SQL, parameter order and processors."""

    __slots__ = ("_binds", "_columns", "_names", "_positional", "_results", "dialect", "sql")

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        self.dialect = dialect
        self.sql = compiled.string
        self._positional = bool(compiled.positional)
        names = list(compiled.positiontup or ()) if self._positional else list(compiled.binds)
        self._names = tuple(names)
        self._binds: tuple[Processor, ...] = tuple(
            compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in names
        )
        columns = list(statement.selected_columns) if isinstance(statement, Select) else []
        self._columns = tuple(str(column.name) for column in columns)
        self._results: tuple[Processor, ...] | None = None
        if columns:
            # What SQLAlchemy applies to a column of this type; the driver's column type
            # (the cursor's description) is not needed by the types this project stores.
            self._results = tuple(
                column.type.dialect_impl(dialect).result_processor(dialect, None)
                for column in columns
            )

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        processed = [
            values[name] if process is None else process(values[name])
            for name, process in zip(self._names, self._binds, strict=True)
        ]
        if self._positional:
            return tuple(processed)
        return dict(zip(self._names, processed, strict=True))

    def row(self, raw: Any) -> Row:
        assert self._results is not None
        return {
            name: value if process is None else process(value)
            for name, process, value in zip(self._columns, self._results, raw, strict=True)
        }


_prepared: dict[tuple[int, int], tuple[ClauseElement, Prepared]] = {}


def prepared(statement: ClauseElement, dialect: Dialect) -> Prepared:
    """`statement` compiled for `dialect`, once (statements are long-lived module values)."""
    key = (id(statement), id(dialect))
    entry = _prepared.get(key)
    if entry is None or entry[0] is not statement:
        entry = (statement, Prepared(statement, dialect))
        _prepared[key] = entry
    return entry[1]


def _cursor_run(conn: Connection, statement: ClauseElement, values: Mapping[str, Any]) -> Any:
    """Execute on the connection's DBAPI cursor (inside its current transaction)."""
    prep = prepared(statement, conn.dialect)
    params = prep.parameters(values)
    cursor = conn.connection.cursor()
    try:
        cursor.execute(prep.sql, params)
    except conn.dialect.loaded_dbapi.Error as err:
        cursor.close()
        lost = conn.dialect.is_disconnect(err, conn.connection, cursor)
        if lost:
            conn.invalidate(err)
        raise sa_exc.DBAPIError.instance(
            prep.sql,
            params,
            err,
            conn.dialect.loaded_dbapi.Error,
            connection_invalidated=lost,
            dialect=conn.dialect,
        ) from err
    return cursor


def fetch_one(conn: Connection, statement: Select[Any], values: Mapping[str, Any]) -> Row | None:
    """The first row of a SELECT as {column name: value}, or None."""
    cursor = _cursor_run(conn, statement, values)
    try:
        raw = cursor.fetchone()
    finally:
        cursor.close()
    return None if raw is None else prepared(statement, conn.dialect).row(raw)


def execute(conn: Connection, statement: ClauseElement, values: Mapping[str, Any]) -> int:
    """Run an INSERT, UPDATE or DELETE; the number of rows it touched."""
    cursor = _cursor_run(conn, statement, values)
    try:
        return int(cursor.rowcount)
    finally:
        cursor.close()
