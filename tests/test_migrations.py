"""The migrations build the schema ``store/tables.py`` describes, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
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


def test_servers_starting_together_on_an_empty_postgres_both_upgrade_it(postgres_url: str) -> None:
    """Two servers started at once on an empty PostgreSQL database both created the tables,
    and one died on a duplicate key (7 times in 8). The upgrade now holds an advisory lock:
    the others wait, then find the schema current. Three processes upgrade at once."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "scimd.cli.main", "db", "upgrade"]
    runs = [
        subprocess.Popen(
            [*command, "--database-url", postgres_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outcomes = [(run.communicate(timeout=120)[1], run.returncode) for run in runs]
    assert [code for _, code in outcomes] == [0, 0, 0], outcomes
    engine = create_engine(postgres_url)
    assert migrate.current(engine) == migrate.head()
    engine.dispose()


def test_a_database_from_before_the_first_schema_was_final_is_refused(tmp_path: Path) -> None:
    """Early builds changed the first migration in place: a database they made upgraded to
    the newest revision, then every write failed on the counters' missing `slot` column."""
    import sqlalchemy as sa

    engine = create_engine(f"sqlite:///{tmp_path / 'early.db'}")
    migrate.ensure_current(engine)
    with engine.begin() as conn:  # the counters table as those builds made it
        conn.execute(sa.text("DROP TABLE counters"))
        conn.execute(sa.text("CREATE TABLE counters (name VARCHAR(32) PRIMARY KEY, value INTEGER)"))
    with pytest.raises(migrate.DatabaseUnsupported, match="no 'slot' column"):
        migrate.ensure_current(engine)
    engine.dispose()


def test_another_applications_or_a_newer_database_is_refused_untouched(
    any_database_url: str,
) -> None:
    """Another application's tables got scimd's added beside them; a revision this scimd
    does not know was a traceback. An empty alembic_version table is scimd's own."""
    import sqlalchemy as sa

    engine = create_engine(any_database_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE customers (id INTEGER PRIMARY KEY)"))
        with pytest.raises(migrate.DatabaseUnsupported, match="tables of something else"):
            migrate.ensure_current(engine)
        with engine.connect() as conn:
            assert sa.inspect(conn).get_table_names() == ["customers"]  # untouched
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE customers"))
            conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        migrate.ensure_current(engine)  # an empty alembic_version: upgraded
        assert migrate.current(engine) == migrate.head()
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
        with pytest.raises(migrate.DatabaseUnsupported, match="revision 0099, which this"):
            migrate.ensure_current(engine)
    finally:
        engine.dispose()
