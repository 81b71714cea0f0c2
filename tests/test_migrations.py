"""The migrations build the schema ``store/tables.py`` describes, on both databases."""

from __future__ import annotations

import json
import logging
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


def test_the_head_known_without_alembic_is_the_scripts_head() -> None:
    """Commands check the database against ``migrate.HEAD`` without loading Alembic: a new
    migration script must move it, or servers would stop upgrading to it."""
    assert migrate.scripts_head() == migrate.HEAD


def test_a_database_at_two_revisions_is_refused_with_the_revisions(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'two.db'}")
    try:
        migrate.ensure_current(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('0003')")
        with pytest.raises(migrate.DatabaseUnsupported, match=r"several schema revisions"):
            migrate.ensure_current(engine)
        with pytest.raises(migrate.DatabaseUnsupported, match=f"0003, {migrate.HEAD}"):
            migrate.current(engine)
    finally:
        engine.dispose()


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


# What the reverted revision 0007 (commits 7020758..9a1f267) made on SQLite, as it made it.
_REVERTED_0007 = (
    "CREATE TABLE member_groups (member_id VARCHAR(64) NOT NULL, group_pk INTEGER NOT NULL,"
    " CONSTRAINT pk_member_groups PRIMARY KEY (member_id, group_pk)) WITHOUT ROWID",
    "CREATE TABLE member_groups_pending (member_id VARCHAR(64) NOT NULL,"
    " group_pk INTEGER NOT NULL,"
    " CONSTRAINT pk_member_groups_pending PRIMARY KEY (member_id, group_pk)) WITHOUT ROWID",
    "INSERT INTO member_groups (member_id, group_pk)"
    " SELECT member_id, group_pk FROM members ORDER BY member_id, group_pk",
    "CREATE TRIGGER members_added AFTER INSERT ON members BEGIN"
    " INSERT INTO member_groups_pending (member_id, group_pk)"
    " VALUES (NEW.member_id, NEW.group_pk) ON CONFLICT DO NOTHING; END",
    "CREATE TRIGGER members_removed AFTER DELETE ON members BEGIN"
    " INSERT INTO member_groups_pending (member_id, group_pk)"
    " VALUES (OLD.member_id, OLD.group_pk) ON CONFLICT DO NOTHING; END",
    "CREATE TRIGGER members_moved AFTER UPDATE OF member_id, group_pk ON members BEGIN"
    " INSERT INTO member_groups_pending (member_id, group_pk)"
    " VALUES (OLD.member_id, OLD.group_pk), (NEW.member_id, NEW.group_pk)"
    " ON CONFLICT DO NOTHING; END",
    "DROP INDEX ix_members_member_id",
    "UPDATE alembic_version SET version_num = '0007'",
)


def test_a_database_the_reverted_revision_0007_upgraded_upgrades_to_the_head(
    tmp_path: Path,
) -> None:
    """A revision shipped and then reverted by deleting its file: the databases it had
    upgraded were refused ("made by a newer scimd") with no way forward, and setting their
    revision back by hand left its triggers filling a table nothing read, and every
    User.groups lookup scanning all memberships. Such a database now upgrades to the head,
    with its memberships and the member -> groups index."""
    import sqlalchemy as sa

    from support.live_server import run_scimd

    url = f"sqlite:///{tmp_path / 'r.db'}"
    engine = create_engine(url)
    try:
        migrate.upgrade(engine, "0006")
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO members VALUES (1, 'u1', 'User'), (2, 'u1', 'User')"))
            for statement in _REVERTED_0007:
                conn.execute(sa.text(statement))
        out = run_scimd("db", "upgrade", "--database-url", url).stdout
        assert f"upgraded the database schema from revision 0007 to {migrate.head()}" in out
        with engine.connect() as conn:
            names = {
                name
                for (name,) in conn.execute(
                    sa.text("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')")
                )
            }
            lookup = "SELECT group_pk FROM members WHERE member_id = 'u1'"
            plan = " ".join(
                str(row[-1]) for row in conn.execute(sa.text(f"EXPLAIN QUERY PLAN {lookup}"))
            )
            kept = conn.execute(sa.text("SELECT count(*) FROM members")).scalar_one()
            differences = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    assert not names & {"member_groups", "member_groups_pending", "members_added"}, names
    assert "ix_members_member_id" in plan, plan
    assert kept == 2 and differences == []


def test_sqlite_upgrades_started_together_wait_for_each_other(tmp_path: Path) -> None:
    """Alembic reads the revision, then writes: in a deferred SQLite transaction a second
    upgrade at once failed with "database is locked" (15 of 30 commands, three at a time), as
    did one of two servers started together on a new file. The upgrade now takes the write
    lock at its BEGIN, as PostgreSQL's takes its advisory lock."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'together.db'}"
    command = [sys.executable, "-m", "scimd.cli.main", "db", "upgrade", "--database-url", url]
    for _ in range(3):  # a new file, then two rounds with nothing left to do
        runs = [
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(3)
        ]
        outcomes = [(run.communicate(timeout=120)[1], run.returncode) for run in runs]
        assert [code for _, code in outcomes] == [0, 0, 0], outcomes
    engine = create_engine(url)
    assert migrate.current(engine) == migrate.head()
    engine.dispose()


def test_commands_other_than_serve_and_upgrade_leave_an_older_schema_alone(
    tmp_path: Path,
) -> None:
    """Every command upgraded a database that was behind, under older servers still running
    on it: one, deleting a group as its schema allowed, left memberships behind that the next
    new group inherited. Only `serve` and `db upgrade` upgrade now; the others say what to
    do, and an empty database is still created by any of them."""
    from support.live_server import ScimdCommandError, run_scimd

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    migrate.upgrade(engine, "0005")
    with pytest.raises(ScimdCommandError) as refused:
        run_scimd("apps", "list", "--database-url", url)
    said = str(refused.value)
    assert "exited with 1" in said and "schema revision 0005" in said, said
    assert "scimd db upgrade" in said and "Traceback" not in said
    assert migrate.current(engine) == "0005"  # untouched
    run_scimd("db", "upgrade", "--database-url", url)
    assert migrate.current(engine) == migrate.head()
    assert "[]" in run_scimd("apps", "list", "--json", "--database-url", url).stdout
    engine.dispose()
    fresh = f"sqlite:///{tmp_path / 'new.db'}"
    run_scimd("apps", "create", "--name", "x", "--database-url", fresh)
    engine = create_engine(fresh)
    assert migrate.current(engine) == migrate.head()
    engine.dispose()


def test_stored_lower_cased_names_are_folded_with_one_small_sigma(any_database_url: str) -> None:
    """Names stored lower-cased before 0009 keep a final sigma that lookups no longer send
    ("ΟΔΟΣ" was stored with it, and `userName eq "ΟΔΟΣ"` now asks for the other sigma). 0009
    folds them. Two names that become one are refused, naming both, and nothing changes:
    keeping one of them unfolded left a user whose writes were all 409s and whose own
    userName found the other user."""
    import sqlalchemy as sa

    from scimd.scim.filter import parse
    from scimd.store.directory import Directory

    final, small = "\u03c2", "\u03c3"
    odos, nos = "\u039f\u0394\u039f\u03a3", "\u039d\u039f\u03a3"  # ΟΔΟΣ, ΝΟΣ

    def add(engine: sa.Engine, pk: int, name: str, low: str) -> None:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO users (pk, id, user_name, user_name_lower, created,"
                    " last_modified, version, doc) VALUES (:pk, :id, :name, :low,"
                    " '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', 1, :doc)"
                ),
                {"pk": pk, "id": f"u{pk}", "name": name, "low": low, "doc": "{}"},
            )

    engine = create_engine(any_database_url)
    try:
        migrate.upgrade(engine, "0008")
        add(engine, 1, odos, odos.lower())
        add(engine, 2, nos, nos.lower())
        add(engine, 3, nos.lower().replace(final, small), nos.lower().replace(final, small))
        with pytest.raises(migrate.DatabaseUnsupported) as refused:
            migrate.ensure_current(engine)
        said = str(refused.value)
        assert f"userName '{nos}' (id u2) and id u3" in said and "nothing was changed" in said
        assert migrate.current(engine) == "0008"
        with engine.connect() as conn:
            kept = conn.execute(sa.text("SELECT user_name_lower FROM users WHERE pk = 1"))
            assert kept.scalar_one() == odos.lower()
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM users WHERE pk = 3"))
        migrate.ensure_current(engine)
        with engine.connect() as conn:
            lows = dict(conn.execute(sa.text("SELECT id, user_name_lower FROM users")).all())
        d = Directory(engine)
        try:
            found = d.search("User", parse(f'userName eq "{odos}"'), "http://x").resources
        finally:
            d.close()
    finally:
        engine.dispose()
    assert lows == {
        "u1": odos.lower().replace(final, small),
        "u2": nos.lower().replace(final, small),
    }
    assert [u["id"] for u in found] == ["u1"]


def test_two_stored_names_that_both_fold_to_one_are_refused_by_name(
    any_database_url: str,
) -> None:
    """Two names stored before 0009, each with a final sigma where the other has the small
    one, fold to one name: 0009 refuses them naming both and changes nothing, as it does for
    a clash with a name already folded (a unique-index error left no user to point at)."""
    import sqlalchemy as sa

    final, small = "\u03c2", "\u03c3"
    engine = create_engine(any_database_url)
    try:
        migrate.upgrade(engine, "0008")
        for pk, low in ((1, f"a{final} b{small}"), (2, f"a{small} b{final}")):
            with engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "INSERT INTO users (pk, id, user_name, user_name_lower, created,"
                        " last_modified, version, doc) VALUES (:pk, :id, :low, :low,"
                        " '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', 1, :doc)"
                    ),
                    {"pk": pk, "id": f"u{pk}", "low": low, "doc": "{}"},
                )
        with pytest.raises(migrate.DatabaseUnsupported) as refused:
            migrate.ensure_current(engine)
        said = str(refused.value)
        assert "(id u2) and id u1" in said and "nothing was changed" in said, said
        assert migrate.current(engine) == "0008"
    finally:
        engine.dispose()


def test_the_case_check_covers_every_cased_character_and_finds_a_difference() -> None:
    """PostgreSQL lower-cases JSON values with its ICU and Python the literals and the name
    columns: they agree while both know the same Unicode version. The server warns when
    they do not; the check's sample holds every character Python lower-cases."""
    import sys

    sample = migrate.cased_sample().split(" ")
    beyond = [
        chr(c)
        for c in range(migrate.CASED_BELOW, sys.maxunicode + 1)
        if not 0xD800 <= c <= 0xDFFF and chr(c).lower() != chr(c)
    ]
    assert beyond == [] and "\u03a3" in sample and "\U0001e900" in sample
    theirs = " ".join(c.lower() for c in sample).replace("\u0101", "\u0100")  # ā kept as Ā
    assert migrate.lowered_otherwise(" ".join(sample), theirs) == ["\u0100"]


def test_this_postgresql_lower_cases_as_python_does(postgres_url: str) -> None:
    import sqlalchemy as sa

    from scimd.store.sqlfilter import PG_FOLD

    engine = create_engine(postgres_url)
    sample = migrate.cased_sample()
    with engine.connect() as conn:
        theirs = conn.execute(
            sa.text(f'SELECT lower(CAST(:s AS text) COLLATE "{PG_FOLD}")'), {"s": sample}
        ).scalar_one()
    engine.dispose()
    assert migrate.lowered_otherwise(sample, theirs) == []


def test_a_server_starting_on_an_older_schema_logs_the_upgrade(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`scimd serve` upgraded an older database without a word in its log (Alembic's lines
    are silenced below debug): operators look there for when the schema changed."""
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        migrate.upgrade(engine, "0008")
        with caplog.at_level(logging.INFO, logger="scimd.store"):
            migrate.ensure_current(engine)  # what `serve` runs at start
            migrate.ensure_current(engine)  # current already: nothing to say
        said = [r.getMessage() for r in caplog.records if "schema" in r.getMessage()]
        assert said == [f"upgraded the database schema from revision 0008 to {migrate.head()}"]
    finally:
        engine.dispose()


def test_whole_decimal_doubles_stored_before_0011_read_as_a_write_stores_them(
    any_database_url: str,
) -> None:
    """A Decimal value that is a whole double of 2^53 or more was stored as the double
    (``1.2345678901234567e+19``) before writes gave it one form; read back unlike anything
    written now, a PUT of what a GET returned changed the user (a new version, an audit
    record). 0011 stores it as a write would; values it leaves alone stay as they are."""
    import sqlalchemy as sa

    from scimd.store import audit
    from scimd.store.directory import Directory
    from scimd.store.prepared import load_json

    urn = "urn:ietf:params:scim:schemas:extension:bizagi:2.0:UserProperties"
    stored = {
        **{"D": 1.2345678901234567e19, "E": -(2.0**60), "F": 2.5, "G": 1000.0, "H": 7},
        **{"Z": -0.0, "W": 2.0**53, "V": 9.5e15, "S": "x"},
    }
    engine = create_engine(any_database_url)
    try:
        migrate.upgrade(engine, "0010")
        with engine.begin() as conn:
            for name in "DEFGHZWV":
                conn.execute(
                    sa.text(
                        "INSERT INTO user_properties (name, name_lower, type, description,"
                        " created) VALUES (:n, :l, 'Decimal', '', '2026-01-01T00:00:00.000Z')"
                    ),
                    {"n": name, "l": name.lower()},
                )
            conn.execute(
                sa.text(
                    "INSERT INTO user_properties (name, name_lower, type, description, created)"
                    " VALUES ('S', 's', 'String', '', '2026-01-01T00:00:00.000Z')"
                )
            )
            doc = json.dumps({"userName": "old@x", urn: stored})
            conn.execute(
                sa.text(
                    "INSERT INTO users (pk, id, user_name, user_name_lower, created,"
                    " last_modified, version, doc) VALUES (1, 'u1', 'old@x', 'old@x',"
                    " '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', 1,"
                    + (" :doc)" if engine.dialect.name == "sqlite" else " CAST(:doc AS JSONB))")
                ),
                {"doc": doc},
            )
        migrate.ensure_current(engine)
        with engine.connect() as conn:
            after = load_json(conn.execute(sa.text("SELECT doc FROM users")).scalar_one())[urn]
        # PostgreSQL's jsonb kept the double's shortest digits, a whole number already.
        e = -(2**60) if engine.dialect.name == "sqlite" else -1152921504606847000
        want = {"D": 12345678901234567000, "E": e, "F": 2.5, "G": 1000.0, "H": 7, "Z": 0.0}
        want |= {"W": 2**53, "V": 9500000000000000}  # PostgreSQL kept "9007199254740992.0"
        assert after == {**want, "S": "x"}
        assert [type(after[k]) for k in "DEFGHZWV"] == [
            int,
            int,
            float,
            float,
            int,
            float,
            int,
            int,
        ]
        assert repr(after["Z"]) == "0.0"  # no negative zero (PostgreSQL's jsonb keeps none)
        d = Directory(engine)
        try:
            got, tag = d.get("User", "u1", "http://x")
            again = d.replace(
                "User", "u1", json.loads(json.dumps(got)), audit.CLI, "http://x", None
            )
        finally:
            d.close()
        assert again.etag == tag and not again.changed
    finally:
        engine.dispose()


def test_a_user_whose_only_whole_double_is_exactly_2_53_is_converted(
    any_database_url: str,
) -> None:
    """2^53 is the first whole double 0011 rewrites: a user holding it and no other value to
    convert was left with the double, which a PUT of what a GET returned then changed."""
    import sqlalchemy as sa

    from scimd.store.prepared import load_json

    urn = "urn:ietf:params:scim:schemas:extension:bizagi:2.0:UserProperties"
    engine = create_engine(any_database_url)
    try:
        migrate.upgrade(engine, "0010")
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO user_properties (name, name_lower, type, description,"
                    " created) VALUES ('W', 'w', 'Decimal', '', '2026-01-01T00:00:00.000Z')"
                )
            )
            conn.execute(
                sa.text(
                    "INSERT INTO users (pk, id, user_name, user_name_lower, created,"
                    " last_modified, version, doc) VALUES (1, 'u1', 'w@x', 'w@x',"
                    " '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', 1,"
                    + (" :doc)" if engine.dialect.name == "sqlite" else " CAST(:doc AS JSONB))")
                ),
                {"doc": json.dumps({"userName": "w@x", urn: {"W": 2.0**53}})},
            )
        migrate.ensure_current(engine)
        with engine.connect() as conn:
            after = load_json(conn.execute(sa.text("SELECT doc FROM users")).scalar_one())[urn]
    finally:
        engine.dispose()
    assert after == {"W": 2**53} and type(after["W"]) is int


def test_of_servers_upgrading_together_only_the_one_that_did_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The revision an upgrade reports is read under its lock: two servers starting together
    on an older database both logged that they had upgraded it."""
    import threading

    url = f"sqlite:///{tmp_path / 'old.db'}"
    first = create_engine(url)
    migrate.upgrade(first, "0008")
    engines = [first, create_engine(url)]
    try:
        with caplog.at_level(logging.INFO, logger="scimd.store"):
            threads = [threading.Thread(target=migrate.ensure_current, args=(e,)) for e in engines]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
        said = [r.getMessage() for r in caplog.records if "schema" in r.getMessage()]
        assert said == [f"upgraded the database schema from revision 0008 to {migrate.head()}"]
    finally:
        for e in engines:
            e.dispose()


@pytest.mark.parametrize("encoding", ["LATIN1", "SQL_ASCII"])
def test_a_postgresql_database_not_in_utf8_is_refused_in_one_line(
    postgres_url: str, encoding: str
) -> None:
    """A database in LATIN1 made `scimd db upgrade` say "arguments and standard input must be
    UTF-8 text" (of arguments that were fine); one in SQL_ASCII (initdb under LANG=C) printed
    a 100-line traceback. Both are refused, saying what to create instead."""
    import os
    import subprocess
    import sys
    import uuid

    import sqlalchemy as sa

    url = sa.engine.make_url(postgres_url)
    name = f"scimd_enc_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            sa.text(
                f"CREATE DATABASE \"{name}\" ENCODING '{encoding}' TEMPLATE template0"
                " LC_COLLATE 'C' LC_CTYPE 'C'"
            )
        )
    target = url.set(database=name).render_as_string(hide_password=False)
    try:
        engine = create_engine(target)
        with pytest.raises(migrate.DatabaseUnsupported, match=f"encoding is {encoding}"):
            migrate.ensure_current(engine)
        engine.dispose()
        done = subprocess.run(
            [sys.executable, "-m", "scimd.cli.main", "db", "upgrade", "--database-url", target],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
            timeout=60,
        )
        assert done.returncode == 1, done.stderr
        assert "needs a UTF8 database" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) <= 3
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
