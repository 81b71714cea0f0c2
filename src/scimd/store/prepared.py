"""Statements compiled once per dialect and executed as driver SQL on the hot path.

Building a SQLAlchemy Core statement and its cache key costs more than running a primary-key
lookup on SQLite (measured: about 60% of a create's database time). The statements every request
runs are therefore written with Core once, compiled to the dialect's SQL text, and executed with
the DBAPI cursor (skipping SQLAlchemy's result machinery, ~40 µs a statement);
JSON documents are encoded and decoded here with orjson.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError


class Prepared:
    """One statement compiled for one dialect; ``run`` binds parameters by name."""

    __slots__ = ("defaults", "names", "positional", "shared", "sql")

    def __init__(self, stmt: sa.ClauseElement, dialect: Dialect) -> None:
        compiled: Any = stmt.compile(dialect=dialect)
        self.sql: str = compiled.string
        self.positional: bool = bool(compiled.positional)
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())
        # Literal values written into the statement become parameters with these values.
        self.defaults: dict[str, Any] = {k: v for k, v in compiled.params.items() if v is not None}
        # One cursor per connection on PostgreSQL (see ``_CURSOR``). SQLite keeps a cursor per
        # statement: closing it ends the statement, which would otherwise hold its read snapshot.
        self.shared = dialect.name != "sqlite"

    def args(self, params: Mapping[str, Any] | None) -> Any:
        """The driver's parameters for ``params`` (named or positional, as compiled)."""
        if self.defaults:
            params = {**self.defaults, **(params or {})}
        if not params:
            return ()
        return tuple(params[n] for n in self.names) if self.positional else dict(params)

    def run(self, conn: sa.Connection, params: Mapping[str, Any] | None = None) -> Result:
        """Execute on the connection's DBAPI cursor, inside its current transaction."""
        args = self.args(params)
        fairy = conn.connection
        if self.shared:
            cur = fairy.info.get(_CURSOR)
            if cur is None:
                cur = fairy.info[_CURSOR] = fairy.dbapi_connection.cursor()  # type: ignore[union-attr]
        else:
            cur = fairy.dbapi_connection.cursor()  # type: ignore[union-attr]
        dbapi = conn.dialect.loaded_dbapi
        try:
            cur.execute(self.sql, args)
        except dbapi.Error as e:
            raise DBAPIError.instance(self.sql, args, e, dbapi.Error) from e
        return Result(cur, dbapi.Error, self.shared)


# The cursor a PostgreSQL connection's prepared statements share: creating one per statement
# cost ~7 µs with psycopg's async cursor (behind SQLAlchemy's adapter). Its results arrive
# whole, and callers read a result before the next statement runs, or never.
_CURSOR = "scimd_cursor"


class Result:
    """The few result accessors the hot path needs, over a DBAPI cursor (rows are tuples).

    Driver errors come out as SQLAlchemy's, from executing or fetching alike (SQLite runs a
    statement row by row as it is fetched), so callers and the SCIM layer handle one kind.
    """

    __slots__ = ("cur", "error", "shared")

    def __init__(self, cur: Any, error: type[Exception], shared: bool = False) -> None:
        self.cur = cur
        self.error = error
        self.shared = shared

    def first(self) -> tuple[Any, ...] | None:
        try:
            row = self.cur.fetchone()
        except self.error as e:
            raise DBAPIError.instance(None, None, e, self.error) from e
        if not self.shared:
            self.cur.close()
        return tuple(row) if row is not None else None

    def scalar_one_or_none(self) -> Any:
        row = self.first()
        return None if row is None else row[0]

    def scalar_one(self) -> Any:
        row = self.first()
        if row is None:
            raise LookupError("no row")  # pragma: no cover - statements always return one
        return row[0]

    def rowcount(self) -> int:
        """Rows a statement without RETURNING changed."""
        n = int(self.cur.rowcount)
        if not self.shared:
            self.cur.close()
        return n

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        try:
            rows = self.cur.fetchall()
        except self.error as e:
            raise DBAPIError.instance(None, None, e, self.error) from e
        if not self.shared:
            self.cur.close()
        return iter(rows)


def dump_json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson refuses a whole number past 64 bits (an unchecked value)
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def load_json(value: Any) -> Any:
    """JSON columns come back as text from SQLite and as objects from PostgreSQL (JSONB)."""
    if isinstance(value, (str, bytes)):
        return orjson.loads(value)
    return value


class StatementCache:
    """Prepared statements keyed by name, built lazily per dialect."""

    def __init__(self) -> None:
        self._by_dialect: dict[str, dict[str, Prepared]] = {}

    def get(self, conn: sa.Connection, name: str, build: Any) -> Prepared:
        d = self._by_dialect.setdefault(conn.dialect.name, {})
        p = d.get(name)
        if p is None:
            p = d[name] = Prepared(build(), conn.dialect)
        return p
