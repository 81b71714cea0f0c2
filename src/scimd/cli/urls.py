"""Database URLs as a person gives and reads them: SQLite paths made absolute, passwords
hidden, and what is behind SQLite's terse errors about its file."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import sqlite3
import urllib.parse
from pathlib import Path

import sqlalchemy as sa


def safe_url(url: str) -> str:
    parsed = absolute(url)
    if parsed.get_backend_name() == "sqlite" and not parsed.query:
        # As typed: render_as_string escapes a ':' in the path (a%3Ab.db).
        return f"{parsed.drivername}:///{parsed.database or ''}"
    shown = parsed.render_as_string(hide_password=True)
    return _SECRET_PARAMETER.sub(r"\1=***", shown)


# libpq's ``password`` (the form taken with Unix sockets) and ``sslpassword`` in a URL's query:
# printed in clear at start, they reached the logs.
_SECRET_PARAMETER = re.compile(r"(?<=[?&])([^=&]*password[^=&]*)=[^&]*", re.IGNORECASE)


def hides_secret(url: str) -> bool:
    parsed = sa.engine.make_url(url)
    return parsed.password is not None or any("password" in k.lower() for k in parsed.query)


def absolute(url: str) -> sa.URL:
    """The URL with a relative SQLite path made absolute: a printed command then works from
    any directory (run elsewhere, a relative one made a new, empty database there)."""
    file = sqlite_file(url)
    parsed = sa.engine.make_url(url)
    return parsed if file is None else parsed.set(database=str(file))


def sqlite_file(url: str) -> Path | None:
    """The absolute path of a SQLite database file named by ``url`` (not a ``file:`` URI,
    nor an in-memory database), else None."""
    parsed = sa.engine.make_url(url)
    path = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or in_memory(path) or path.startswith("file:"):
        return None
    return Path(path).expanduser().absolute()


def not_there(url: str) -> Path | None:
    """The SQLite file ``url`` names, when it is not there yet (opening it will make it) or
    holds nothing (a file made at the path after the database was deleted from under a
    running server: a restart quietly gave it new tables)."""
    file = sqlite_file(url)
    return file if file is not None and (not file.exists() or holds_nothing(file)) else None


def holds_nothing(file: Path) -> bool:
    try:
        if file.stat().st_size == 0:
            return True
        uri = f"file:{urllib.parse.quote(str(file))}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            return bool(conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0)
    except (OSError, sqlite3.Error):  # not a database: said as such when it is opened
        return False


def no_database(path: str) -> str:
    """Three slashes name a path relative to the current directory, four an absolute one:
    ``sqlite:///var/lib/scimd.db`` looked for var/lib/scimd.db here, and said only that it
    was not there."""
    said = f"no database at {path}"
    if not Path(path).expanduser().is_absolute():
        said += (
            f" (relative to the current directory, {Path.cwd()}: sqlite:/// with three slashes"
            " names a relative path; an absolute one takes four, sqlite:////var/lib/scimd.db)"
        )
    return f"{said}: check --database-url / SCIMD_DATABASE_URL"


def in_memory(path: str) -> bool:
    return path in ("", ":memory:") or path.startswith("file::memory:")


# The database URL a command opened last: what a database error is explained against.
opened: list[str | None] = [None]


def url_argument(url: str) -> str:
    """A database URL for a printed command: quoted, absolute, its password never shown."""
    safe = safe_url(url)
    if hides_secret(url):
        return f"{shlex.quote(safe)}  # put the password back in place of ***"
    return shlex.quote(safe)


def sqlite_hint(message: str) -> str:
    """What is behind SQLite's terse errors about the file, checked on the spot."""
    file = None if opened[0] is None else sqlite_file(opened[0])
    if file is None:
        return ""
    folder = file.parent
    if not folder.is_dir():
        return f" ({folder} is not a directory)"
    if file.is_dir():
        return f" ({file} is a directory: name a file in it, such as {file / 'scimd.db'})"
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if free is not None and free < 1024 * 1024 and ("disk" in message or "full" in message):
        return (
            f" (the disk holding {folder} is full: {free} bytes free; free some space and"
            " start again)"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        return f" (this user cannot write in {folder}, where {file.name} and its -wal file live)"
    if file.exists() and not os.access(file, os.R_OK | os.W_OK):
        return f" (this user cannot read and write {file})"
    return f" ({file})" if "unable to open" in message else ""
