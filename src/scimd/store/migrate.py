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


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    with engine.begin() as conn:
        command.upgrade(_config(conn), revision)


def ensure_current(engine: sa.Engine) -> None:
    """Upgrade the database to the newest schema if it is behind (an empty one included)."""
    if engine.dialect.name == "postgresql":
        check_postgres(engine)
    if current(engine) != head():
        upgrade(engine)


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
