"""The ``scimd`` command: its groups of commands, and how any of them fails."""

from __future__ import annotations

import importlib.metadata
import io
import sys
from typing import Annotated

import sqlalchemy as sa
import typer

from scimd import settings as settings_mod
from scimd.cli import admins, apps, audit, common, database, properties, serve
from scimd.cli.common import EXIT_BUSY, MARKDOWN, exit_status, fail
from scimd.cli.urls import sqlite_hint
from scimd.scim.errors import ScimError
from scimd.store import migrate
from scimd.store.engine import is_busy

app = typer.Typer(
    help="scimd: a SCIM 2.0 service provider (and, later, provisioning engine).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=MARKDOWN,
    # An unexpected error's traceback never prints local variables (a URL's password, a
    # secret): typer 0.12 showed them by default.
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _settings_file(
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            envvar="SCIMD_CONFIG",
            metavar="FILE",
            help="TOML settings file for every command (as `serve --config`): the database,"
            " the custom properties' URN, ...",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=lambda given: _show_version(given),
            help="Print scimd's version and the schema revision it uses, then exit.",
            metavar="",
        ),
    ] = False,
) -> None:
    """scimd: a SCIM 2.0 service provider (and, later, provisioning engine)."""
    common.config_file[0] = config


def _show_version(given: bool) -> None:
    """Runs while the options are read (eager), before a missing command is an error."""
    if given:
        typer.echo(f"scimd {importlib.metadata.version('scimd')} (schema {migrate.head()})")
        raise typer.Exit(0)


app.add_typer(apps.app, name="apps")
app.add_typer(properties.app, name="properties")
app.add_typer(database.app, name="db")
app.add_typer(admins.app, name="admin")
app.add_typer(audit.app, name="audit")
app.command()(serve.serve)


def main() -> None:
    """The ``scimd`` command: what a person can fix is one line on stderr, not a traceback."""
    for stream in (sys.stdout, sys.stderr):
        # A console that is not UTF-8 got a traceback for the "…" of every secret hint.
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    try:
        app()
    except (settings_mod.SettingsError, migrate.DatabaseUnsupported) as e:
        fail(str(e))
    except ScimError as e:
        fail(e.detail, exit_status(e))
    except UnicodeError:  # arguments or stdin bytes that are not UTF-8 text
        fail("arguments and standard input must be UTF-8 text")
    except sa.exc.ArgumentError as e:
        hint = (
            "for PostgreSQL write postgresql+psycopg://USER@HOST/DATABASE"
            if "dialects:postgres" in str(e)
            else "e.g. sqlite:///scimd.db or postgresql+psycopg://USER@HOST/DATABASE"
        )
        fail(f"not a database URL: {e} ({hint})")
    except sa.exc.DBAPIError as e:
        first = str(e.orig).strip().splitlines()[0] if e.orig is not None else str(e)
        if is_busy(e):
            fail(
                f"the database is busy ({first}): another process holds its write lock;"
                " nothing was changed, retry the command",
                EXIT_BUSY,
            )
        fail(f"the database cannot be used: {first}{sqlite_hint(first)}")
    except OSError as e:  # e.g. the database's directory cannot be made
        where = f": {e.filename}" if e.filename else ""
        fail(f"{e.strerror or e}{where}")
    except ModuleNotFoundError as e:
        fail(
            f"no driver for this database URL ({e.name} is not installed): scimd works with"
            " sqlite:///PATH and postgresql+psycopg://USER@HOST/DATABASE"
        )
    except OverflowError:
        fail("a number given is too large")


if __name__ == "__main__":
    main()
