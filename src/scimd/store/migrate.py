"""Schema migrations (Alembic), run programmatically so no alembic.ini is needed."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

_HERE = Path(__file__).parent / "migrations"


def _config(conn: sa.Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def head() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


# pg_advisory_xact_lock key of schema upgrades ("scimd" in ASCII).
_UPGRADE_LOCK = 0x7363696D64


def check_known(engine: sa.Engine) -> None:
    """Refuse a database scimd did not make, or made by a newer scimd: Alembic answered both
    with a traceback (an unknown revision), or quietly added scimd's tables beside another
    application's."""
    at = current(engine)
    if at is None:
        tables = sorted(sa.inspect(engine).get_table_names())
        if tables:
            shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
            raise DatabaseUnsupported(
                f"this database holds tables of something else ({shown}) and none of scimd's:"
                " give scimd an empty database or its own"
            )
        return
    known = {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}
    if at not in known:
        raise DatabaseUnsupported(
            f"this database is at schema revision {at}, which this scimd does not know (it"
            f" knows up to {head()}): a newer scimd made it, so run that one, or it belongs"
            " to another application"
        )


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    check_known(engine)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Two servers starting on an empty database both created the tables, and one
            # died on a duplicate key (7 times in 8). The second now waits for the first's
            # upgrade (DDL is transactional here) and finds nothing left to do.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK})
            if revision == "head" and MigrationContext.configure(conn).get_current_revision() == (
                head()
            ):
                return
        command.upgrade(_config(conn), revision)


def ensure_current(engine: sa.Engine) -> None:
    """Upgrade the database to the newest schema if it is behind (an empty one included)."""
    if engine.dialect.name == "postgresql":
        check_postgres(engine)
    if current(engine) != head():
        upgrade(engine)  # after check_known
    check_counters(engine)


def check_counters(engine: sa.Engine) -> None:
    """Refuse a database made by a build from before the first migration was final: it
    upgrades to the newest revision, yet every write then fails on a column it lacks."""
    columns = {c["name"] for c in sa.inspect(engine).get_columns("counters")}
    if "slot" not in columns:
        raise DatabaseUnsupported(
            "this database was made by a development build of scimd from before its first"
            " schema was final (its counters table has no 'slot' column), and cannot be"
            " upgraded; create a new database"
        )


class DatabaseUnsupported(RuntimeError):
    """A database scimd cannot work with, and why."""


def check_postgres(engine: sa.Engine) -> None:
    """Refuse a PostgreSQL without ICU: filters fold case with its root-locale collation."""
    from scimd.store.sqlfilter import PG_FOLD

    query = sa.text("SELECT 1 FROM pg_collation WHERE collname = :name")
    with engine.connect() as conn:
        if conn.execute(query, {"name": PG_FOLD}).first() is None:
            raise DatabaseUnsupported(
                f"this PostgreSQL has no ICU collation '{PG_FOLD}': scimd folds case in filters"
                " with it, as SCIM compares names (PostgreSQL's own lower() depends on the"
                " server's locale). Use a PostgreSQL built with ICU, as Debian's, Ubuntu's,"
                " Red Hat's and the official container images are."
            )


def revision(engine: sa.Engine, message: str) -> None:  # pragma: no cover - developer tool
    with engine.begin() as conn:
        command.revision(_config(conn), message=message, autogenerate=True)
