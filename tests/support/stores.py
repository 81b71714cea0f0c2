"""In-process stores for tests that call ``scimd.store`` directly (no server)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from scimd.store import audit, migrate
from scimd.store.directory import Directory
from scimd.store.engine import create_engine
from scimd.store.tables import audit as audit_table


@contextmanager
def opened_directory(database_url: str) -> Iterator[Directory]:
    """A ``Directory`` on ``database_url``, its schema made current; closed afterwards."""
    engine = create_engine(database_url)
    migrate.ensure_current(engine)
    d = Directory(engine)
    try:
        yield d
    finally:
        d.close()
        engine.dispose()


def add_old_audit_records(conn: sa.Connection, days: int, operation: str = "create") -> None:
    """Audit records ``old1`` .. ``oldN`` written on 1 .. N January 2020, in time order (at
    most 9): what a prune finds to remove."""
    for day in range(1, days + 1):
        row = audit.values(audit.CLI, operation, "User", f"old{day}")
        row["at"] = f"2020-01-0{day}T00:00:00.000Z"
        conn.execute(audit_table.insert().values(row))
