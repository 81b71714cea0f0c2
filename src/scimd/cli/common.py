"""What the ``scimd`` commands share: their options, settings, database sessions and the way
they fail (one line on stderr, an exit status a script can act on)."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Final, NoReturn, TypeVar

import sqlalchemy as sa
import typer

from scimd import settings as settings_mod
from scimd.cli.urls import in_memory, no_database, opened, safe_url
from scimd.scim.errors import ScimError
from scimd.store import migrate
from scimd.store.engine import create_engine, write_transaction

# Help texts are Markdown: docstrings wrap at 100 columns, and rich's default mode kept
# their line breaks, cutting sentences in the command lists.
MARKDOWN: Final = "markdown"


def group(help_text: str) -> typer.Typer:
    """A group of commands; it shows them when given none ("Missing command." said nothing
    useful)."""
    return typer.Typer(help=help_text, rich_markup_mode=MARKDOWN, no_args_is_help=True)


# The settings file given to ``scimd --config`` (or SCIMD_CONFIG), read by every command.
config_file: list[str | None] = [None]


def load_settings(config: str | None = None, **overrides: Any) -> settings_mod.Settings:
    loaded = settings_mod.load(config or config_file[0], **overrides)
    if not _warned:
        _warned.append(True)
        for line in settings_mod.unknown_environment():
            typer.echo(f"warning: {line}", err=True)
    return loaded


_warned: list[bool] = []

DbUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="SCIMD_DATABASE_URL",
        metavar="URL",
        help="sqlite:///relative/path.db, sqlite:////absolute/path.db (default"
        " sqlite:///scimd.db) or postgresql+psycopg://...",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.", metavar="")]
ClientId = Annotated[
    str, typer.Argument(metavar="CLIENT_ID", help="The application's client id (apps list).")
]
SecretId = Annotated[int, typer.Argument(metavar="SECRET_ID", help="The secret's id (apps list).")]
PropertyName = Annotated[str, typer.Argument(metavar="NAME", help="The property's name.")]
Username = Annotated[str, typer.Argument(metavar="USERNAME", help="The admin's username.")]
T = TypeVar("T")


def open_engine(url: str | None, create: bool = True) -> sa.Engine:
    """The database of ``url``, upgraded. Without ``create`` (commands that only read or change
    what exists), a SQLite file that is not there is an error rather than a new database: a
    mistyped path would otherwise answer "no applications". (A ``file:`` URI is SQLite's to
    open: its path is not checked here.)"""
    url = given_url(url, load_settings())
    parsed = sa.engine.make_url(url)
    made: Path | None = None
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        if in_memory(path):
            raise ScimError(f"{url} is an in-memory database, gone when this command ends")
        if not path.startswith("file:") and not Path(path).exists():
            if not create:
                raise ScimError(no_database(path))
            made = Path(path).expanduser().absolute()
    engine = new_engine(url)
    if not create and made is None:
        migrate.check_known(engine)  # another application's tables are said as such
    if not create and made is None and migrate.current(engine) is None:
        # An empty database (a mistyped PostgreSQL name, a 0-byte file) answered "no
        # applications" and was given scimd's tables.
        engine.dispose()
        raise ScimError(
            f"{safe_url(url)} holds no scimd database: check --database-url /"
            " SCIMD_DATABASE_URL (`scimd serve` or `scimd apps create` make a new one)"
        )
    migrate.ensure_current(engine, upgrade_behind=False)
    note_made(made)
    return engine


def given_url(url: str | None, s: settings_mod.Settings) -> str:
    """``--database-url`` or the settings' URL. Given empty (a script's unset variable), it is
    an error, as an empty SCIMD_DATABASE_URL is: it wrote to ./scimd.db."""
    if url is None:
        return s.database_url
    if not url.strip():
        raise ScimError("--database-url is empty: give a database URL, or leave the option out")
    settings_mod.check_database_url(url, "--database-url")
    return url


def new_engine(url: str, s: settings_mod.Settings | None = None) -> sa.Engine:
    """The engine of ``url``, remembered as the database a later error is explained against."""
    opened[0] = url
    timeout = (s or load_settings()).database_timeout
    return create_engine(url, timeout=timeout, lock_timeout=timeout)


@contextmanager
def transaction(
    url: str | None, create: bool = True, write: bool = True
) -> Iterator[sa.Connection]:
    engine = open_engine(url, create)
    try:
        with write_transaction(engine) if write else engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


# Exit statuses a script can act on without parsing the message (README, "For scripts"):
# Ansible's `failed_when: rc not in [0, 3]` makes a create idempotent. 2 is Click's usage error.
EXIT_FAILED: Final = 1
EXIT_EXISTS: Final = 3  # the name is taken (409)
EXIT_NOT_FOUND: Final = 4  # no such application, secret, property or admin (404)
EXIT_BUSY: Final = 5  # another process holds the database's write lock: nothing done, retry


def exit_status(error: ScimError) -> int:
    return {409: EXIT_EXISTS, 404: EXIT_NOT_FOUND, 503: EXIT_BUSY}.get(error.status, EXIT_FAILED)


def run(fn: Callable[[], T]) -> T:
    """Turn SCIM errors into a one-line message and the exit status of their kind."""
    try:
        return fn()
    except ScimError as e:
        fail(e.detail, exit_status(e))


def can_print_secret() -> None:
    """Refuse before making a secret that could not be shown: with standard output closed,
    `apps rotate` made one nobody had, and exited 0."""
    if sys.stdout is None or sys.stdout.closed:
        fail("standard output is closed: the secret, shown once, would be lost")


@contextmanager
def secret_shown(client_id: str, done: str) -> Iterator[None]:
    """A secret made but not printed (a full disk) says so, and what to do."""
    try:
        yield
        sys.stdout.flush()
    except OSError as e:
        fail(
            f"application {client_id} was {done}, but its secret could not be printed"
            f" ({e.strerror or e}): rotate it (`scimd apps rotate {client_id}`) and revoke the"
            " lost one"
        )


def show(data: Any, as_json: bool, text: str) -> None:
    # ASCII JSON (\u escapes): valid JSON on a console that is not UTF-8, which failed on the
    # "…" of every secret hint.
    typer.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def fail(message: str, status: int = EXIT_FAILED) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise SystemExit(status)


def note_made(file: Path | None) -> None:
    """Say where a new database was made: a mistyped path (``sqlite:///`` is relative) made
    one no server uses, and it looked like lost data."""
    if file is not None:
        typer.echo(f"note: created a new database at {file}", err=True)


def self_command() -> str:
    """How this process was started, so a printed command works as it is (``scimd`` need not
    be on PATH: the README runs ``.venv/bin/scimd``)."""
    if Path(sys.argv[0]).name == "scimd":
        return shlex.quote(sys.argv[0])
    return f"{shlex.quote(sys.executable)} -m scimd.cli.main"
