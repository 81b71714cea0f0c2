"""``meta.lastModified`` for writes made by one statement over many rows, never back in time.

A write over one resource takes ``values.later_than`` of the time it read. Statements that
touch rows they did not read (the groups of a deleted member, the holders of a removed
property) compute it in SQL: the later of now and a millisecond past the row's own time. With
only the later of the two, a group whose time was written by a server with a clock ahead kept
that time when its member was deleted, and ``meta.lastModified gt`` it missed the change.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

# A millisecond past a lastModified, in PostgreSQL's SQL (also written into the text of the
# one-statement group PATCH, ``store.conditional``).
PG_NEXT_MS = (
    "to_char(timezone('UTC', CAST({column} AS timestamptz) + interval '1 millisecond'),"
    ' \'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"\')'
)


def after(conn: sa.Connection, column: Any, now: Any) -> Any:
    """The new lastModified of ``column``'s rows (fixed-width UTC text): ``now`` unless a
    millisecond past the row's time is later."""
    if conn.dialect.name == "sqlite":
        bumped = sa.func.strftime("%Y-%m-%dT%H:%M:%fZ", column, "+0.001 seconds")
        return sa.func.max(now, bumped)
    return sa.func.greatest(now, sa.literal_column(PG_NEXT_MS.format(column=column.name)))
