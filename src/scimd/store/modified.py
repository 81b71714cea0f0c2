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
from sqlalchemy.dialects.postgresql import TIMESTAMP


def after(conn: sa.Connection, column: Any, now: Any) -> Any:
    """The new lastModified of ``column``'s rows (fixed-width UTC text): ``now`` unless a
    millisecond past the row's time is later."""
    if conn.dialect.name == "sqlite":
        bumped = sa.func.strftime("%Y-%m-%dT%H:%M:%fZ", column, "+0.001 seconds")
        return sa.func.max(now, bumped)
    instant = sa.cast(column, TIMESTAMP(timezone=True)) + sa.text("interval '1 millisecond'")
    bumped = sa.func.to_char(sa.func.timezone("UTC", instant), 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
    return sa.func.greatest(now, bumped)
