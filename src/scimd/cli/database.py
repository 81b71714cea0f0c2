"""``scimd db``: the schema's migrations, and backups of a SQLite database."""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer

from scimd.cli.common import (
    EXIT_EXISTS,
    DbUrl,
    Json,
    fail,
    given_url,
    group,
    load_settings,
    new_engine,
    note_made,
    show,
)
from scimd.cli.urls import no_database, not_there, safe_url, sqlite_file, sqlite_hint
from scimd.store import migrate

app = group("Database schema migrations.")


@app.command("upgrade")
def db_upgrade(database_url: DbUrl = None) -> None:
    """Upgrade the database schema to the newest version."""
    s = load_settings()
    url = given_url(database_url, s)
    made = not_there(url)
    engine = new_engine(url, s)
    done = migrate.upgrade(engine)
    typer.echo(done or migrate.moved(migrate.head(), migrate.head()))
    note_made(made)
    engine.dispose()


@app.command("current")
def db_current(
    database_url: DbUrl = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Exit with status 1 when the database is behind (an upgrade is due) or"
            " cannot be used as it is (missing, or made by a newer scimd).",
            metavar="",
        ),
    ] = False,
    as_json: Json = False,
) -> None:
    """Show the database's schema revision and the newest one."""
    s = load_settings()
    url = given_url(database_url, s)
    file = sqlite_file(url)
    if file is not None and not file.exists():  # opening it would make an empty database
        fail(no_database(str(sa.engine.make_url(url).database)))
    engine = new_engine(url, s)
    migrate.check_known(engine)
    current = migrate.current(engine)
    engine.dispose()
    show(
        {"current": current, "head": migrate.head(), "upgrade_due": current != migrate.head()},
        as_json,
        f"current: {current}  head: {migrate.head()}"
        if current is not None
        else f"current: none (no scimd schema yet: `scimd db upgrade` or `scimd serve` makes it)"
        f"  head: {migrate.head()}",
    )
    if check and current != migrate.head():
        raise typer.Exit(1)


@app.command("backup")
def db_backup(
    target: Annotated[
        Path, typer.Argument(metavar="FILE", help="The copy to write (must not exist).")
    ],
    database_url: DbUrl = None,
    as_json: Json = False,
) -> None:
    """Copy a SQLite database, a server running on it or not, then check the copy.

    One step of SQLite's backup, which a running server's writes do not restart (the sqlite3
    shell's `.backup` copies 100 pages a step and starts over after each write of another
    process: at Entra's pace it never finished). PostgreSQL: use pg_dump."""
    s = load_settings()
    url = given_url(database_url, s)
    file = sqlite_file(url)
    if file is None:  # PostgreSQL, or SQLite's URI and in-memory forms
        fail(f"{safe_url(url)} is not a SQLite file (back PostgreSQL up with pg_dump)")
    if not file.exists():
        fail(no_database(str(file)))
    target = target.expanduser().absolute()
    if target.exists():
        fail(f"{target} exists: give a new file (a backup never overwrites)", EXIT_EXISTS)
    if not target.parent.is_dir() or not os.access(target.parent, os.W_OK):
        fail(f"cannot write in {target.parent}: give a file in a directory this user can write")
    engine = new_engine(url, s)
    migrate.check_known(engine)
    if migrate.current(engine) is None:
        fail(f"{safe_url(url)} holds no scimd database: nothing to back up")
    engine.dispose()
    source = sqlite3.connect(f"file:{urllib.parse.quote(str(file))}?mode=ro", uri=True)
    copy: sqlite3.Connection | None = None
    try:
        copy = sqlite3.connect(target)
        source.execute(f"PRAGMA busy_timeout={int(s.database_timeout * 1000)}")
        source.backup(copy)  # all pages in one step, in one read transaction
        checked = copy.execute("PRAGMA integrity_check").fetchone()[0]
    except BaseException as e:
        if copy is not None:
            copy.close()
        target.unlink(missing_ok=True)
        if isinstance(e, sqlite3.Error):  # a full disk, a database that cannot be read
            fail(f"the backup failed, and nothing was kept: {e}{sqlite_hint(str(e))}")
        raise
    finally:
        source.close()
    copy.close()
    if checked != "ok":
        target.unlink(missing_ok=True)
        fail(f"the copy failed its integrity check ({checked}); nothing was kept")
    size = target.stat().st_size
    show(
        {"backup": str(target), "bytes": size, "integrity": checked},
        as_json,
        f"backed up {file} to {target} ({size:,} bytes; integrity check: ok)",
    )
