"""Version counters that let each server process cache what rarely changes.

``schema_version`` moves when custom properties change (the User resource type is rebuilt) and
``auth_version`` when an application loses access (a secret revoked, an application disabled or
deleted), so verified bearer tokens can be cached. A request reads both in one prepared
statement; the counters live in the ``settings`` table, so every process (and the command line)
sees a change on its next request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from scimd.store.prepared import StatementCache
from scimd.store.tables import settings

SCHEMA = "schema_version"
AUTH = "auth_version"

_STATEMENTS = StatementCache()


@dataclass(frozen=True, slots=True)
class Versions:
    schema: int
    auth: int


def columns() -> tuple[Any, Any]:
    """Both counters as scalar subqueries, to add to another statement's columns."""

    def value(key: str) -> Any:
        return sa.select(settings.c.value).where(settings.c.key == key).scalar_subquery()

    return value(SCHEMA).label("schema_version"), value(AUTH).label("auth_version")


# The counters read in a SQLite write transaction, with that transaction: until it ends only
# this connection can move them (it holds the database's write lock), and ``bump`` forgets
# them, so a group commit's creates read them once rather than once each.
_HELD = "scimd.versions_held"


def read(conn: sa.Connection, *, write_locked: bool = False) -> Versions:
    """Both counters; ``write_locked``: the caller is in a SQLite write transaction, and a
    value read earlier in that transaction is still the value."""
    if write_locked:
        held = conn.info.get(_HELD)
        if held is not None and held[0] is conn.get_transaction():
            return held[1]  # type: ignore[no-any-return]
    row = _STATEMENTS.get(conn, "versions", lambda: sa.select(*columns())).run(conn).first()
    schema, auth = row if row is not None else (None, None)
    v = Versions(int(schema or 0), int(auth or 0))
    if write_locked:
        conn.info[_HELD] = (conn.get_transaction(), v)
    return v


def read_one(conn: sa.Connection, key: str) -> int:
    stmt = _STATEMENTS.get(
        conn,
        f"version.{key}",
        lambda: sa.select(settings.c.value).where(settings.c.key == key),
    )
    v = stmt.run(conn).scalar_one_or_none()
    return int(v) if v else 0


def bump(conn: sa.Connection, key: str) -> None:
    """Advance a counter inside the caller's transaction.

    One upsert: the increment happens in the statement itself, so two bumps at once on
    PostgreSQL give two different values (or a token verified between them would stay cached
    after the second), and the first bump of a counter no migration seeded (``auth_version``)
    makes its row. An UPDATE then INSERT failed there: two first bumps both found no row to
    lock, and the second INSERT hit the key, rolling its revocation back.
    """
    conn.info.pop(_HELD, None)
    advanced = sa.cast(sa.cast(settings.c.value, sa.Integer) + 1, sa.String)
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(settings)
    conn.execute(
        insert.values(key=key, value="1").on_conflict_do_update(
            index_elements=[settings.c.key], set_={"value": advanced}
        )
    )
