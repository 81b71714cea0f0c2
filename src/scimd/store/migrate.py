"""Schema migrations (Alembic), run programmatically so no alembic.ini is needed."""

from __future__ import annotations

import functools
import logging
import platform
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from scimd.store.engine import write_transaction

if TYPE_CHECKING:
    from alembic.config import Config

_HERE = Path(__file__).parent / "migrations"
log = logging.getLogger("scimd.store")

# The newest revision, known without Alembic: every command and server start checks the
# database against it, and importing Alembic and reading the scripts to find it cost ~0.15 s
# of each. Alembic is loaded only to upgrade or to judge a revision that is not this one.
# test_migrations holds it to the scripts' head.
HEAD = "0012"


def _config(conn: sa.Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def head() -> str:
    return HEAD


def scripts_head() -> str | None:
    """The head of the migration scripts, as Alembic reads it (what ``HEAD`` must be)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def current(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return _revision(conn)


def _revision(conn: sa.Connection) -> str | None:
    """The database's revision, read as Alembic keeps it (one row of ``alembic_version``)."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    found: list[str] = list(
        conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars()
    )
    if len(found) > 1:
        raise DatabaseUnsupported(
            f"this database is at several schema revisions at once ({', '.join(sorted(found))}):"
            " scimd's migrations are one line, so something else changed its alembic_version"
        )
    return found[0] if found else None


# pg_advisory_xact_lock key of schema upgrades ("scimd" in ASCII).
_UPGRADE_LOCK = 0x7363696D64


def check_known(engine: sa.Engine) -> None:
    """Refuse a database scimd did not make, or made by a newer scimd (see ``_check_known``)."""
    with engine.connect() as conn:
        _check_known(conn)


def _check_known(conn: sa.Connection) -> None:
    """Alembic answered an unknown revision with a traceback, and quietly added scimd's
    tables beside another application's. Run where ``upgrade`` holds its lock: a server
    upgrading the same empty database at once is then done, or not started."""
    at = _revision(conn)
    if at is None:
        tables = set(sa.inspect(conn).get_table_names())
        if conn.dialect.name == "postgresql":  # tables of extensions (PostGIS's) are not others'
            owned = conn.execute(
                sa.text(
                    "SELECT c.relname FROM pg_class c JOIN pg_depend d ON d.objid = c.oid"
                    " WHERE d.deptype = 'e' AND c.relnamespace = current_schema()::regnamespace"
                )
            )
            tables -= {name for (name,) in owned}
        tables.discard("alembic_version")  # scimd's, even empty
        if tables:
            listed = sorted(tables)
            shown = ", ".join(listed[:5]) + (", ..." if len(listed) > 5 else "")
            raise DatabaseUnsupported(
                f"this database holds tables of something else ({shown}) and none of scimd's:"
                " give scimd an empty database or its own"
            )
        return
    if at == HEAD:
        return
    from alembic.script import ScriptDirectory

    known = {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}
    if at not in known:
        raise DatabaseUnsupported(
            f"this database is at schema revision {at}, which this scimd does not know (it"
            f" knows up to {head()}): a newer scimd made it, so run that one, or it belongs"
            " to another application"
        )


def upgrade(engine: sa.Engine, revision: str = "head") -> str | None:
    """Upgrade to ``revision``; what it did, in words (``moved``), or None if the database
    was there already (another process may have just upgraded it: the revision is read
    under the lock the upgrade holds)."""
    if engine.dialect.name == "postgresql":
        check_postgres(engine)  # (`scimd db upgrade` comes here without ``ensure_current``)
    with _upgrade_transaction(engine) as conn:
        if engine.dialect.name == "postgresql":
            # Two servers starting on an empty database both created the tables, and one
            # died on a duplicate key (7 times in 8). The second now waits for the first's
            # upgrade (DDL is transactional here) and finds nothing left to do.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK})
        found = _revision(conn)
        if revision == "head" and found == head():
            return None
        _check_known(conn)
        from alembic import command

        command.upgrade(_config(conn), revision)
        return moved(found, head() if revision == "head" else revision)


@contextmanager
def _upgrade_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """On SQLite the upgrade holds the write lock from its BEGIN (IMMEDIATE), as PostgreSQL's
    holds its advisory lock: Alembic reads the revision and then writes, and in a deferred
    transaction a second process upgrading at once failed on "database is locked" (15 of 30
    commands, three upgrades at a time) instead of waiting and finding nothing to do."""
    if engine.dialect.name == "sqlite":
        with write_transaction(engine) as conn:
            yield conn
    else:
        with engine.begin() as conn:
            yield conn


def ensure_current(engine: sa.Engine, *, upgrade_behind: bool = True) -> None:
    """Upgrade the database to the newest schema if it is behind (an empty one included).

    ``upgrade_behind=False`` (commands other than ``serve`` and ``db upgrade``): create the
    schema of an empty database, but refuse one made by an older scimd. Any command used to
    upgrade it, under older servers still running on it: one of them, deleting a group the way
    its schema allowed, left memberships behind that a new group then inherited."""
    if engine.dialect.name == "postgresql":
        check_postgres(engine)
    at = current(engine)
    if at != head():
        if at is not None and not upgrade_behind:
            check_known(engine)  # a newer scimd's database is refused as such
            raise DatabaseBehind(
                f"this database is at schema revision {at} and this scimd uses {head()}:"
                " stop every server of the older scimd that uses it, then run `scimd db"
                " upgrade` (or start `scimd serve`, which upgrades it)"
            )
        done = upgrade(engine)  # after check_known
        if done is not None:
            log.info(done)  # operators look for when the schema changed, and how
    check_counters(engine)


def moved(before: str | None, after: str | None) -> str:
    """What an upgrade did, in the words of the log and of ``scimd db upgrade``."""
    if before == after:
        return f"the database schema is at revision {after} already"
    if before is None:
        return f"created the database schema at revision {after}"
    return f"upgraded the database schema from revision {before} to {after}"


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


class DatabaseBehind(DatabaseUnsupported):
    """A database an older scimd made, which only ``serve`` and ``db upgrade`` upgrade."""


def check_postgres(engine: sa.Engine) -> None:
    """Refuse a PostgreSQL database not in UTF8, or without ICU: filters fold case with its
    root-locale collation."""
    from scimd.store.sqlfilter import PG_FOLD

    query = sa.text("SELECT 1 FROM pg_collation WHERE collname = :name")
    encoding = sa.text(
        "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()"
    )
    with engine.connect() as conn:
        found: str = conn.execute(encoding).scalar_one()
        if found != "UTF8":
            # Names hold any character: in LATIN1 a write of one outside it failed (and the
            # message blamed the command's arguments); SQL_ASCII keeps bytes unchecked.
            raise DatabaseUnsupported(
                f"this PostgreSQL database's encoding is {found}; scimd needs a UTF8 database:"
                f" create one with CREATE DATABASE name ENCODING 'UTF8' TEMPLATE template0"
            )
        if conn.execute(query, {"name": PG_FOLD}).first() is None:
            raise DatabaseUnsupported(
                f"this PostgreSQL has no ICU collation '{PG_FOLD}': scimd folds case in filters"
                " with it, as SCIM compares names (PostgreSQL's own lower() depends on the"
                " server's locale). Use a PostgreSQL built with ICU, as Debian's, Ubuntu's,"
                " Red Hat's and the official container images are."
            )
        sample = cased_sample()
        theirs: str = conn.execute(
            sa.text(f'SELECT lower(CAST(:s AS text) COLLATE "{PG_FOLD}")'), {"s": sample}
        ).scalar_one()
    differ = lowered_otherwise(sample, theirs)
    if differ:
        log.warning(
            "PostgreSQL's ICU lower-cases %d character(s) otherwise than this Python (%s,"
            " Unicode %s), e.g. %s: filters on values holding them may find what Python's"
            " evaluator would not, and the reverse",
            len(differ),
            platform.python_version(),
            unicodedata.unidata_version,
            " ".join(f"U+{ord(c[0]):04X}" for c in differ[:5]),
        )


def lowered_otherwise(sample: str, theirs: str) -> list[str]:
    """The characters of ``sample`` (one a word) that ``theirs`` lower-cases otherwise."""
    pairs = zip(sample.split(" "), theirs.split(" "), strict=False)
    return [a for a, b in pairs if a.lower() != b]


@functools.cache
def cased_sample() -> str:
    """Every character Python lower-cases, and every code point its Unicode has not assigned
    (a newer ICU may know a case pair there), one word each: what the database's ICU must
    lower-case alike (they agree while both follow the same Unicode version; an upgrade of
    either side can add case pairs the other does not know)."""
    chars = (chr(c) for c in range(CASED_BELOW) if not 0xD800 <= c <= 0xDFFF)
    return " ".join(c for c in chars if c.lower() != c or unicodedata.category(c) == "Cn")


# Scripts with case end before U+1F000 (Adlam, U+1E900-U+1E95F, is the last); the whole range
# took 150 ms of every command's start.
CASED_BELOW = 0x1F000


def revision(engine: sa.Engine, message: str) -> None:  # pragma: no cover - developer tool
    from alembic import command

    with engine.begin() as conn:
        command.revision(_config(conn), message=message, autogenerate=True)
