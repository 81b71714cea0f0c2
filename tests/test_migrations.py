"""The migrations build the schema ``store/tables.py`` describes, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from scimd.store import migrate
from scimd.store.engine import create_engine
from scimd.store.tables import metadata


def test_an_upgraded_database_matches_the_table_definitions(any_database_url: str) -> None:
    """A column added to the tables but not to a migration (or the reverse) is a difference
    here, before it is a failed statement in production."""
    engine = create_engine(any_database_url)
    try:
        migrate.ensure_current(engine)
        with engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    assert differences == []
