"""The ``scimd`` command: serve, apps, properties, db."""

from __future__ import annotations

import contextlib
import errno
import functools
import gc
import importlib.metadata
import io
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Final, NoReturn, TypeVar

import sqlalchemy as sa
import typer

from scimd import settings as settings_mod
from scimd.auth import admins as admins_mod
from scimd.auth import apps as apps_mod
from scimd.scim.errors import ScimError
from scimd.store import audit, migrate
from scimd.store import properties as props_mod
from scimd.store.engine import create_engine, is_busy, write_transaction
from scimd.web.observability import JsonFormatter

# Help texts are Markdown: docstrings wrap at 100 columns, and rich's default mode kept
# their line breaks, cutting sentences in the command lists.
MARKDOWN: Final = "markdown"
app = typer.Typer(
    help="scimd: a SCIM 2.0 service provider (and, later, provisioning engine).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=MARKDOWN,
    # An unexpected error's traceback never prints local variables (a URL's password, a
    # secret): typer 0.12 showed them by default.
    pretty_exceptions_show_locals=False,
)
# Each group shows its commands when given none ("Missing command." said nothing useful).
apps_app = typer.Typer(
    help="OAuth 2 applications and their secrets (bearer tokens).",
    rich_markup_mode=MARKDOWN,
    no_args_is_help=True,
)
props_app = typer.Typer(
    help="Custom user properties (the UserProperties extension).",
    rich_markup_mode=MARKDOWN,
    no_args_is_help=True,
)
db_app = typer.Typer(
    help="Database schema migrations.", rich_markup_mode=MARKDOWN, no_args_is_help=True
)
audit_app = typer.Typer(
    help="The audit log of changes.", rich_markup_mode=MARKDOWN, no_args_is_help=True
)
admin_app = typer.Typer(
    help="Admin accounts of the work portal.", rich_markup_mode=MARKDOWN, no_args_is_help=True
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
        ),
    ] = False,
) -> None:
    """scimd: a SCIM 2.0 service provider (and, later, provisioning engine)."""
    global _config_file
    _config_file = config


def _show_version(given: bool) -> None:
    """Runs while the options are read (eager), before a missing command is an error."""
    if given:
        typer.echo(f"scimd {importlib.metadata.version('scimd')} (schema {migrate.head()})")
        raise typer.Exit(0)


# The settings file given to ``scimd --config`` (or SCIMD_CONFIG), read by every command.
_config_file: str | None = None


def _settings(config: str | None = None, **overrides: Any) -> settings_mod.Settings:
    loaded = settings_mod.load(config or _config_file, **overrides)
    if not _warned:
        _warned.append(True)
        for line in settings_mod.unknown_environment():
            typer.echo(f"warning: {line}", err=True)
    return loaded


_warned: list[bool] = []


app.add_typer(apps_app, name="apps")
app.add_typer(props_app, name="properties")
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
app.add_typer(audit_app, name="audit")

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


def _engine(url: str | None, create: bool = True) -> sa.Engine:
    """The database of ``url``, upgraded. Without ``create`` (commands that only read or change
    what exists), a SQLite file that is not there is an error rather than a new database: a
    mistyped path would otherwise answer "no applications". (A ``file:`` URI is SQLite's to
    open: its path is not checked here.)"""
    url = _given_url(url, _settings())
    parsed = sa.engine.make_url(url)
    made: Path | None = None
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        if _in_memory(path):
            raise ScimError(f"{url} is an in-memory database, gone when this command ends")
        if not path.startswith("file:") and not Path(path).exists():
            if not create:
                raise ScimError(_no_database(path))
            made = Path(path).expanduser().absolute()
    engine = _new_engine(url)
    if not create and made is None:
        migrate.check_known(engine)  # another application's tables are said as such
    if not create and made is None and migrate.current(engine) is None:
        # An empty database (a mistyped PostgreSQL name, a 0-byte file) answered "no
        # applications" and was given scimd's tables.
        engine.dispose()
        raise ScimError(
            f"{_safe_url(url)} holds no scimd database: check --database-url /"
            " SCIMD_DATABASE_URL (`scimd serve` or `scimd apps create` make a new one)"
        )
    migrate.ensure_current(engine, upgrade_behind=False)
    _note_made(made)
    return engine


def _given_url(url: str | None, s: settings_mod.Settings) -> str:
    """``--database-url`` or the settings' URL. Given empty (a script's unset variable), it is
    an error, as an empty SCIMD_DATABASE_URL is: it wrote to ./scimd.db."""
    if url is None:
        return s.database_url
    if not url.strip():
        raise ScimError("--database-url is empty: give a database URL, or leave the option out")
    settings_mod.check_database_url(url, "--database-url")
    return url


def _new_engine(url: str, s: settings_mod.Settings | None = None) -> sa.Engine:
    """The engine of ``url``, remembered as the database a later error is explained against."""
    _opened[0] = url
    timeout = (s or _settings()).database_timeout
    return create_engine(url, timeout=timeout, lock_timeout=timeout)


@contextmanager
def _tx(url: str | None, create: bool = True, write: bool = True) -> Iterator[sa.Connection]:
    engine = _engine(url, create)
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


def _exit_status(error: ScimError) -> int:
    return {409: EXIT_EXISTS, 404: EXIT_NOT_FOUND, 503: EXIT_BUSY}.get(error.status, EXIT_FAILED)


def _run(fn: Callable[[], T]) -> T:
    """Turn SCIM errors into a one-line message and the exit status of their kind."""
    try:
        return fn()
    except ScimError as e:
        _fail(e.detail, _exit_status(e))


def _can_print_secret() -> None:
    """Refuse before making a secret that could not be shown: with standard output closed,
    `apps rotate` made one nobody had, and exited 0."""
    if sys.stdout is None or sys.stdout.closed:
        _fail("standard output is closed: the secret, shown once, would be lost")


@contextmanager
def _secret_shown(client_id: str, done: str) -> Iterator[None]:
    """A secret made but not printed (a full disk) says so, and what to do."""
    try:
        yield
        sys.stdout.flush()
    except OSError as e:
        _fail(
            f"application {client_id} was {done}, but its secret could not be printed"
            f" ({e.strerror or e}): rotate it (`scimd apps rotate {client_id}`) and revoke the"
            " lost one"
        )


def _print(data: Any, as_json: bool, text: str) -> None:
    # ASCII JSON (\u escapes): valid JSON on a console that is not UTF-8, which failed on the
    # "…" of every secret hint.
    typer.echo(json.dumps(data, indent=2, default=str) if as_json else text)


# -- serve ---------------------------------------------------------------------------------
@app.command()
def serve(
    host: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS", help="Address to bind (default 127.0.0.1; env SCIMD_HOST)."
        ),
    ] = None,
    port: Annotated[
        int | None, typer.Option(metavar="PORT", help="Port (default 8000; env SCIMD_PORT).")
    ] = None,
    database_url: DbUrl = None,
    config: Annotated[str | None, typer.Option(metavar="FILE", help="TOML settings file.")] = None,
    public_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="Public base URL, e.g. https://idp.example.com (env SCIMD_PUBLIC_URL)",
        ),
    ] = None,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESSES",
            help="Reverse proxies whose X-Forwarded-For/-Proto headers are trusted"
            " (comma-separated; default 127.0.0.1; '' for none; env"
            " SCIMD_FORWARDED_ALLOW_IPS).",
        ),
    ] = None,
) -> None:
    """Run the SCIM server (upgrades the database schema first)."""
    import uvicorn

    from scimd.web.app import create_app

    s = _settings(
        config,
        host=host,
        port=port,
        database_url=database_url,
        public_url=public_url,
        forwarded_allow_ips=forwarded_allow_ips,
    )
    _setup_logging(s.log_level)
    parsed = sa.engine.make_url(s.database_url)
    if parsed.get_backend_name() == "sqlite" and _in_memory(parsed.database or ""):
        _fail(
            f"{s.database_url} is an in-memory database: gone when the server stops, and out of"
            " reach of the scimd commands that create its token; use sqlite:///scimd.db"
        )
    if s.port == 0:
        _fail(
            "port 0 would be a port chosen at random, which no link printed here could name:"
            " give one with --port (or SCIMD_PORT)"
        )
    _check_listen(s.host, s.port)
    made = _not_there(s.database_url)
    engine = _new_engine(s.database_url, s)
    migrate.ensure_current(engine)
    with engine.connect() as conn:  # before anything is printed: a refusal comes alone
        props_mod.check_urn(conn, s.properties_urn)
    with write_transaction(engine) as conn:
        n_apps: int = conn.execute(sa.text("SELECT count(*) FROM applications")).scalar_one()
        setup_token = admins_mod.new_setup_token(conn)
    shown = s.public_url or _listen_url(s.host, s.port)
    typer.echo(f"scimd serving {shown}/scim/v2/ (database {_safe_url(s.database_url)})", err=True)
    _note_made(made)
    typer.echo(f"Work portal: {shown}/admin/", err=True)
    if s.audit_retention_days:
        typer.echo(
            f"Audit log: records older than {s.audit_retention_days} day(s) are deleted"
            " at start and hourly (audit_retention_days)",
            err=True,
        )
    me, db = _self_command(), _url_argument(s.database_url)
    if setup_token:
        typer.echo(
            "First start: no admin yet. Open this one-time link (valid 24 hours) to create one:\n"
            f"  {shown}/admin/setup?token={setup_token}\n"
            f"or run: {me} admin create USERNAME --database-url {db}",
            err=True,
        )
    if n_apps == 0:
        typer.echo(
            "No OAuth 2 application yet. Create the bearer token to give Entra ID "
            "(shown once):\n"
            f'  {me} apps create --name "Entra ID" --grant bearer --scope API '
            f'--scope "USER SYNC" --database-url {db}',
            err=True,
        )
    app_ = create_app(s, engine)
    # What exists now (modules, schema, templates, prepared statements) lives as long as the
    # process: keep it out of the cyclic collector's full passes, which took 43-90 ms each
    # (measured), a stall for every request in flight.
    gc.collect()
    gc.freeze()
    loop = "uvloop" if _has("uvloop") else "asyncio"
    _stop_gracefully_on_hangup()
    uvicorn.run(
        app_,
        host=s.host,
        port=s.port,
        loop=loop,
        http=_http_protocol(s.database_url, s.database_connections),
        ws="none",  # no WebSocket endpoints: an upgrade request is an ordinary request
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=s.shutdown_timeout or None,
        timeout_keep_alive=s.keep_alive_timeout,
        proxy_headers=bool(s.forwarded_allow_ips.strip()),
        forwarded_allow_ips=s.forwarded_allow_ips.strip() or None,
    )


def _listen_url(host: str, port: int) -> str:
    """The base URL of the address served: an IPv6 one in brackets (``http://::1:8000``, which
    the banner printed, opens nothing)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _stop_gracefully_on_hangup() -> None:
    """SIGHUP (a closed terminal, a log rotation script) killed the server at once: requests
    in progress were cut, the last access log lines lost, the WAL left unchecked. It now stops
    the server as SIGTERM does (uvicorn reads its list of signals when it starts serving)."""
    import uvicorn.server

    hangup = getattr(signal, "SIGHUP", None)
    if hangup is not None and hangup not in uvicorn.server.HANDLED_SIGNALS:
        handled: tuple[int, ...] = (*uvicorn.server.HANDLED_SIGNALS, hangup)
        uvicorn.server.HANDLED_SIGNALS = handled  # type: ignore[assignment]


def _http_protocol(database_url: str, connections: int) -> Any:
    """uvicorn's httptools protocol, replies sent at the end of the loop step: all of them on
    SQLite; on a network database those to GETs, while more requests are in progress than
    there are ``connections`` slots (``web/coalesce.py``)."""
    if not _has("httptools"):
        return "h11"
    from scimd.web.coalesce import (
        CoalescingHttpToolsProtocol,
        GetCoalescingHttpToolsProtocol,
        Load,
    )

    if database_url.startswith("sqlite"):
        return CoalescingHttpToolsProtocol
    return functools.partial(GetCoalescingHttpToolsProtocol, load=Load(max(1, connections)))


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _safe_url(url: str) -> str:
    parsed = _absolute(url)
    if parsed.get_backend_name() == "sqlite" and not parsed.query:
        # As typed: render_as_string escapes a ':' in the path (a%3Ab.db).
        return f"{parsed.drivername}:///{parsed.database or ''}"
    shown = parsed.render_as_string(hide_password=True)
    return _SECRET_PARAMETER.sub(r"\1=***", shown)


# libpq's ``password`` (the form taken with Unix sockets) and ``sslpassword`` in a URL's query:
# printed in clear at start, they reached the logs.
_SECRET_PARAMETER = re.compile(r"(?<=[?&])([^=&]*password[^=&]*)=[^&]*", re.IGNORECASE)


def _hides_secret(url: str) -> bool:
    parsed = sa.engine.make_url(url)
    return parsed.password is not None or any("password" in k.lower() for k in parsed.query)


def _absolute(url: str) -> sa.URL:
    """The URL with a relative SQLite path made absolute: a printed command then works from
    any directory (run elsewhere, a relative one made a new, empty database there)."""
    file = _sqlite_file(url)
    parsed = sa.engine.make_url(url)
    return parsed if file is None else parsed.set(database=str(file))


def _sqlite_file(url: str) -> Path | None:
    """The absolute path of a SQLite database file named by ``url`` (not a ``file:`` URI,
    nor an in-memory database), else None."""
    parsed = sa.engine.make_url(url)
    path = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or _in_memory(path) or path.startswith("file:"):
        return None
    return Path(path).expanduser().absolute()


def _not_there(url: str) -> Path | None:
    """The SQLite file ``url`` names, when it is not there yet (opening it will make it) or
    holds nothing (a file made at the path after the database was deleted from under a
    running server: a restart quietly gave it new tables)."""
    file = _sqlite_file(url)
    return file if file is not None and (not file.exists() or _holds_nothing(file)) else None


def _holds_nothing(file: Path) -> bool:
    try:
        if file.stat().st_size == 0:
            return True
        uri = f"file:{urllib.parse.quote(str(file))}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            return bool(conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0)
    except (OSError, sqlite3.Error):  # not a database: said as such when it is opened
        return False


def _note_made(file: Path | None) -> None:
    """Say where a new database was made: a mistyped path (``sqlite:///`` is relative) made
    one no server uses, and it looked like lost data."""
    if file is not None:
        typer.echo(f"note: created a new database at {file}", err=True)


def _no_database(path: str) -> str:
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


def _in_memory(path: str) -> bool:
    return path in ("", ":memory:") or path.startswith("file::memory:")


# The database URL a command opened last: what a database error is explained against.
_opened: list[str | None] = [None]


def _check_listen(host: str, port: int) -> None:
    """Fail before the banner (and a set-up link for this server) when the address cannot be
    bound: uvicorn said so only after them, in a JSON log line, as if it had started."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        _fail(
            f"cannot listen on {host}: {e.strerror}; --host takes an address of this machine"
            " (127.0.0.1, or 0.0.0.0 for every interface)"
        )
        return
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                hint = (
                    "another process listens there: stop it, or pick another port with --port"
                    " (or SCIMD_PORT)"
                )
            elif e.errno == errno.EACCES:
                hint = (
                    "ports below 1024 need root (or CAP_NET_BIND_SERVICE): pick another with"
                    " --port, behind a proxy on the low port"
                )
            else:
                hint = "--host takes an address of this machine (127.0.0.1, or 0.0.0.0)"
            _fail(f"cannot listen on {host}:{port}: {e.strerror}; {hint}")


def _self_command() -> str:
    """How this process was started, so a printed command works as it is (``scimd`` need not
    be on PATH: the README runs ``.venv/bin/scimd``)."""
    if Path(sys.argv[0]).name == "scimd":
        return shlex.quote(sys.argv[0])
    return f"{shlex.quote(sys.executable)} -m scimd.cli.main"


def _url_argument(url: str) -> str:
    """A database URL for a printed command: quoted, absolute, its password never shown."""
    safe = _safe_url(url)
    if _hides_secret(url):
        return f"{shlex.quote(safe)}  # put the password back in place of ***"
    return shlex.quote(safe)


def _sqlite_hint(message: str) -> str:
    """What is behind SQLite's terse errors about the file, checked on the spot."""
    file = None if _opened[0] is None else _sqlite_file(_opened[0])
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


def main() -> None:
    """The ``scimd`` command: what a person can fix is one line on stderr, not a traceback."""
    for stream in (sys.stdout, sys.stderr):
        # A console that is not UTF-8 got a traceback for the "…" of every secret hint.
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    try:
        app()
    except (settings_mod.SettingsError, migrate.DatabaseUnsupported) as e:
        _fail(str(e))
    except ScimError as e:
        _fail(e.detail, _exit_status(e))
    except UnicodeError:  # arguments or stdin bytes that are not UTF-8 text
        _fail("arguments and standard input must be UTF-8 text")
    except sa.exc.ArgumentError as e:
        hint = (
            "for PostgreSQL write postgresql+psycopg://USER@HOST/DATABASE"
            if "dialects:postgres" in str(e)
            else "e.g. sqlite:///scimd.db or postgresql+psycopg://USER@HOST/DATABASE"
        )
        _fail(f"not a database URL: {e} ({hint})")
    except sa.exc.DBAPIError as e:
        first = str(e.orig).strip().splitlines()[0] if e.orig is not None else str(e)
        if is_busy(e):
            _fail(
                f"the database is busy ({first}): another process holds its write lock;"
                " nothing was changed, retry the command",
                EXIT_BUSY,
            )
        _fail(f"the database cannot be used: {first}{_sqlite_hint(first)}")
    except OSError as e:  # e.g. the database's directory cannot be made
        where = f": {e.filename}" if e.filename else ""
        _fail(f"{e.strerror or e}{where}")
    except ModuleNotFoundError as e:
        _fail(
            f"no driver for this database URL ({e.name} is not installed): scimd works with"
            " sqlite:///PATH and postgresql+psycopg://USER@HOST/DATABASE"
        )
    except OverflowError:
        _fail("a number given is too large")


def _fail(message: str, status: int = EXIT_FAILED) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise SystemExit(status)


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if level.upper() != "DEBUG":  # "Context impl SQLiteImpl." at every start hid the banner
        logging.getLogger("alembic").setLevel(logging.WARNING)


# -- apps ----------------------------------------------------------------------------------
@apps_app.command("create")
def apps_create(
    name: Annotated[
        str, typer.Option(metavar="NAME", help="A name to recognise the application by.")
    ],
    grant: Annotated[
        str,
        typer.Option(
            metavar="GRANT", help="'bearer' (the secret is the token) or 'client_credentials'."
        ),
    ] = "bearer",
    scope: Annotated[
        list[str] | None,
        typer.Option(
            metavar="SCOPE",
            help="Allowed scope; repeat: --scope API --scope 'USER SYNC' (the default: both).",
        ),
    ] = None,
    lifetime: Annotated[
        int | None,
        typer.Option(
            metavar="SECONDS",
            help=(
                "Access token lifetime of a client_credentials application, in seconds"
                " (default 3600; 0 = never expires)."
            ),
        ),
    ] = None,
    database_url: DbUrl = None,
    as_json: Json = False,
) -> None:
    """Create an application and print its client secret (shown once, stored hashed)."""
    scopes = scope or ["API", "USER SYNC"]

    _can_print_secret()

    def go() -> tuple[dict[str, Any], str]:
        with _tx(database_url) as conn:
            return apps_mod.create_app(conn, name, grant, scopes, audit.CLI, lifetime)

    row, secret = _run(go)
    data = {**row, "client_secret": secret}
    use = (
        "For Entra ID, paste it as Secret Token."
        if row["grant_type"] == "bearer"
        else "It is not a token: exchange it at POST /oauth2/server/token (client credentials"
        ' grant; in Entra ID, "OAuth2 Client Credentials Grant").'
    )
    with _secret_shown(row["client_id"], "created"):
        _print(
            data,
            as_json,
            f"client_id:     {row['client_id']}\nclient_secret: {secret}\n"
            f"Copy the secret now: it is not shown again. {use}",
        )


@apps_app.command("list")
def apps_list(database_url: DbUrl = None, as_json: Json = False) -> None:
    """List applications (secrets are never shown, only their first characters)."""

    def go() -> list[dict[str, Any]]:
        with _tx(database_url, create=False, write=False) as conn:
            return apps_mod.list_apps(conn)

    rows = _run(go)
    lines = []
    for r in rows:
        lines.append(
            f"{r['client_id']}  {r['name']!r}  {r['grant_type']}  {','.join(r['scopes'])}  "
            f"{'enabled' if r['enabled'] else 'disabled'}"
        )
        for sec in r["secrets"]:
            state = f"revoked {sec['revoked']}" if sec["revoked"] else "active"
            used = f"last used {sec['last_used']}" if sec["last_used"] else "never used"
            lines.append(
                f"  secret {sec['id']}  {sec['hint']}  created {sec['created']}  {state}  {used}"
            )
    _print(rows, as_json, "\n".join(lines) or "no applications")


def _app_action(client_id: ClientId, database_url: str | None, fn: Callable[..., Any]) -> Any:
    def go() -> Any:
        with _tx(database_url, create=False) as conn:
            return fn(conn, client_id, audit.CLI)

    return _run(go)


@apps_app.command("revoke")
def apps_revoke(client_id: ClientId, database_url: DbUrl = None) -> None:
    """Revoke every secret and token of an application and disable it (takes effect at once)."""
    _app_action(client_id, database_url, apps_mod.revoke_app)
    typer.echo(f"revoked {client_id}")


@apps_app.command("revoke-secret")
def apps_revoke_secret(
    client_id: ClientId, secret_id: SecretId, database_url: DbUrl = None
) -> None:
    """Revoke one secret (its id is in `apps list`) and the access tokens it obtained: the
    end of a rotation, once every client uses the new secret."""
    _app_action(client_id, database_url, lambda c, i, a: apps_mod.revoke_secret(c, i, secret_id, a))
    typer.echo(f"revoked secret {secret_id} of {client_id}")


@apps_app.command("rotate")
def apps_rotate(client_id: ClientId, database_url: DbUrl = None, as_json: Json = False) -> None:
    """Add a new secret; the old ones keep working until revoked (`apps revoke-secret`), so
    clients can be switched without downtime."""
    _can_print_secret()

    def rotate(conn: sa.Connection, i: str, actor: audit.Actor) -> tuple[str, int]:
        """The new secret and its id, which `revoke-secret` takes (a script had to diff
        `apps list` to find it)."""
        secret = apps_mod.rotate_secret(conn, i, actor)
        return secret, apps_mod.secret_id(conn, secret)

    secret, secret_id = _app_action(client_id, database_url, rotate)
    with _secret_shown(client_id, "given a new secret"):
        _print(
            {"client_id": client_id, "client_secret": secret, "secret_id": secret_id},
            as_json,
            f"client_secret: {secret}\nsecret id:     {secret_id}\n"
            "Copy the secret now: it is not shown again.",
        )


@apps_app.command("disable")
def apps_disable(client_id: ClientId, database_url: DbUrl = None) -> None:
    """Disable an application: its secrets stop working until it is enabled again, and the
    access tokens it obtained are discarded (it asks for new ones once enabled)."""
    _app_action(client_id, database_url, lambda c, i, a: apps_mod.set_enabled(c, i, False, a))
    typer.echo(f"disabled {client_id}")


@apps_app.command("enable")
def apps_enable(client_id: ClientId, database_url: DbUrl = None) -> None:
    """Enable a disabled application."""

    def enable(conn: sa.Connection, i: str, actor: audit.Actor) -> bool:
        """Whether the application has a secret that works (a revoked one stays revoked)."""
        apps_mod.set_enabled(conn, i, True, actor)
        return any(not sec["revoked"] for sec in apps_mod.get_app(conn, i)["secrets"])

    if _app_action(client_id, database_url, enable):
        typer.echo(f"enabled {client_id}")
    else:
        typer.echo(
            f"enabled {client_id}, but every secret of it is revoked: give it a new one with"
            f" `scimd apps rotate {client_id}`"
        )


@apps_app.command("delete")
def apps_delete(client_id: ClientId, database_url: DbUrl = None) -> None:
    """Delete an application and all its secrets and tokens."""
    _app_action(client_id, database_url, apps_mod.delete_app)
    typer.echo(f"deleted {client_id}")


# -- properties ----------------------------------------------------------------------------
@props_app.command("add")
def properties_add(
    name: PropertyName,
    type_: Annotated[
        str,
        typer.Option(
            "--type",
            metavar="TYPE",
            help="String, Integer, Decimal, Boolean, DateTime or Date (basic types only).",
        ),
    ],
    description: Annotated[str, typer.Option(metavar="TEXT", help="What the property holds.")] = "",
    database_url: DbUrl = None,
    as_json: Json = False,
) -> None:
    """Define a custom user property; it appears in /Schemas at once."""

    urn = _settings().properties_urn

    def go() -> Any:
        with _tx(database_url) as conn:
            return props_mod.add_property(conn, name, type_, description, audit.CLI, urn)

    p = _run(go)
    _print(
        {"name": p.name, "type": p.type, "description": p.description, "path": f"{urn}:{p.name}"},
        as_json,
        f"added {p.name} ({p.type}); map it in Entra as {urn}:{p.name}",
    )


@props_app.command("list")
def properties_list(database_url: DbUrl = None, as_json: Json = False) -> None:
    """List custom user properties."""

    def go() -> Any:
        with _tx(database_url, create=False, write=False) as conn:
            props_mod.check_urn(conn, _settings().properties_urn)
            return props_mod.list_properties(conn)

    rows = _run(go)
    data = [{"name": p.name, "type": p.type, "description": p.description} for p in rows]
    text = "\n".join(f"{p.name}  {p.type}  {p.description}" for p in rows)
    _print(data, as_json, text or "no custom properties")


@props_app.command("remove")
def properties_remove(
    name: PropertyName,
    database_url: DbUrl = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Remove even if users hold values.", metavar="")
    ] = False,
) -> None:
    """Remove a custom user property definition."""
    urn = _settings().properties_urn

    def go() -> Any:
        with _tx(database_url, create=False) as conn:
            props_mod.check_urn(conn, urn)
            try:
                return props_mod.remove_property(conn, name, audit.CLI, urn, confirmed=yes)
            except props_mod.ValuesHeld as e:  # counted with writes held off
                raise ScimError(
                    f"{e.held} user(s) hold a value for '{name}'; re-run with --yes to remove it"
                ) from None

    p, _held = _run(go)
    typer.echo(f"removed {p.name}")


# -- admin -----------------------------------------------------------------------------------
PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from standard input (for scripts).",
        metavar="",
    ),
]


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")  # a password file with CRLF endings
    try:  # where getpass asks; without it getpass warns that it may echo, and reads the pipe
        open("/dev/tty").close()  # only whether it opens
    except OSError:
        _fail("no terminal to ask for the password: pass it with --password-stdin")
    first: str = typer.prompt("Password", hide_input=True)
    again: str = typer.prompt("Repeat password", hide_input=True)
    if first != again:
        typer.echo("error: the passwords differ", err=True)
        raise typer.Exit(1)
    return first


@admin_app.command("create")
def admin_create(
    username: Username, database_url: DbUrl = None, password_stdin: PasswordStdin = False
) -> None:
    """Create a portal admin (password hashed with argon2id)."""
    password = _password(password_stdin)

    def go() -> Any:
        with _tx(database_url) as conn:
            return admins_mod.create(conn, username, password, audit.CLI)

    a = _run(go)
    typer.echo(f"created admin {a.username}")


@admin_app.command("reset-password")
def admin_reset_password(
    username: Username, database_url: DbUrl = None, password_stdin: PasswordStdin = False
) -> None:
    """Set a new password for an admin; their open sessions end."""
    password = _password(password_stdin)

    def go() -> None:
        with _tx(database_url, create=False) as conn:
            admins_mod.reset_password(conn, username, password, audit.CLI)

    _run(go)
    typer.echo(f"password of {username} reset; their sessions are signed out")


@admin_app.command("list")
def admin_list(database_url: DbUrl = None, as_json: Json = False) -> None:
    """List the portal's admins and when each last signed in."""

    def go() -> list[dict[str, Any]]:
        with _tx(database_url, create=False, write=False) as conn:
            return admins_mod.list_admins(conn)

    rows = _run(go)
    text = "\n".join(
        f"{a['username']}  created {a['created']}  last sign-in {a['last_login'] or 'never'}"
        for a in rows
    )
    _print(rows, as_json, text or "no admins")


@admin_app.command("delete")
def admin_delete(username: Username, database_url: DbUrl = None) -> None:
    """Delete a portal admin; their open sessions end at once."""

    def go() -> int:
        with _tx(database_url, create=False) as conn:
            return admins_mod.delete(conn, username, audit.CLI)

    left = _run(go)
    more = "" if left else "; no admin is left: create one with `scimd admin create USERNAME`"
    typer.echo(f"deleted admin {username}{more}")


# -- db ------------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade(database_url: DbUrl = None) -> None:
    """Upgrade the database schema to the newest version."""
    s = _settings()
    url = _given_url(database_url, s)
    made = _not_there(url)
    engine = _new_engine(url, s)
    done = migrate.upgrade(engine)
    typer.echo(done or migrate.moved(migrate.head(), migrate.head()))
    _note_made(made)
    engine.dispose()


@db_app.command("current")
def db_current(
    database_url: DbUrl = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Exit with status 1 when the database is behind (an upgrade is due)."
        ),
    ] = False,
    as_json: Json = False,
) -> None:
    """Show the database's schema revision and the newest one."""
    s = _settings()
    url = _given_url(database_url, s)
    file = _sqlite_file(url)
    if file is not None and not file.exists():  # opening it would make an empty database
        _fail(_no_database(str(sa.engine.make_url(url).database)))
    engine = _new_engine(url, s)
    migrate.check_known(engine)
    current = migrate.current(engine)
    engine.dispose()
    _print(
        {"current": current, "head": migrate.head(), "upgrade_due": current != migrate.head()},
        as_json,
        f"current: {current}  head: {migrate.head()}",
    )
    if check and current != migrate.head():
        raise typer.Exit(1)


@db_app.command("backup")
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
    s = _settings()
    url = _given_url(database_url, s)
    file = _sqlite_file(url)
    if file is None:  # PostgreSQL, or SQLite's URI and in-memory forms
        _fail(f"{_safe_url(url)} is not a SQLite file (back PostgreSQL up with pg_dump)")
    if not file.exists():
        _fail(_no_database(str(file)))
    target = target.expanduser().absolute()
    if target.exists():
        _fail(f"{target} exists: give a new file (a backup never overwrites)", EXIT_EXISTS)
    if not target.parent.is_dir() or not os.access(target.parent, os.W_OK):
        _fail(f"cannot write in {target.parent}: give a file in a directory this user can write")
    engine = _new_engine(url, s)
    migrate.check_known(engine)
    if migrate.current(engine) is None:
        _fail(f"{_safe_url(url)} holds no scimd database: nothing to back up")
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
            _fail(f"the backup failed, and nothing was kept: {e}{_sqlite_hint(str(e))}")
        raise
    finally:
        source.close()
    copy.close()
    if checked != "ok":
        target.unlink(missing_ok=True)
        _fail(f"the copy failed its integrity check ({checked}); nothing was kept")
    size = target.stat().st_size
    _print(
        {"backup": str(target), "bytes": size, "integrity": checked},
        as_json,
        f"backed up {file} to {target} ({size:,} bytes; integrity check: ok)",
    )


# -- audit ---------------------------------------------------------------------------------
@audit_app.command("prune")
def audit_prune(
    older_than: Annotated[
        int,
        typer.Option(
            metavar="DAYS",
            min=1,
            max=settings_mod.MAX_RETENTION_DAYS,
            help="Delete the records older than this many days.",
        ),
    ],
    database_url: DbUrl = None,
    as_json: Json = False,
) -> None:
    """Delete old audit records (the log grows with every change; keep what your retention
    policy asks for). Runs in small batches beside a live server."""
    before = audit.cutoff(older_than)

    def go() -> int:
        engine = _engine(database_url, create=False)
        try:
            return audit.prune(engine, before, audit.CLI)
        finally:
            engine.dispose()

    removed = _run(go)
    _print(
        {"removed": removed, "before": before},
        as_json,
        f"removed {removed} audit record(s) made before {before}",
    )


@audit_app.command("list")
def audit_list(
    resource: Annotated[
        str | None,
        typer.Option(metavar="ID", help="Only the records of this resource (user, group, app)."),
    ] = None,
    actor: Annotated[
        str | None,
        typer.Option(metavar="CLIENT_ID", help="Only the changes this application made."),
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=100_000, help="At most this many, the newest first.")
    ] = 50,
    database_url: DbUrl = None,
    as_json: Json = False,
) -> None:
    """Show audit records, the newest first, with their whole detail (the portal shortens
    long ones): e.g. which members a change added or removed, `--resource GROUP_ID`."""

    def go() -> list[dict[str, Any]]:
        engine = _engine(database_url, create=False)
        try:
            with engine.connect() as conn:
                # One more than shown: whether there are more to say so.
                return audit.history(conn, resource_id=resource, actor=actor, limit=limit + 1)
        finally:
            engine.dispose()

    rows = _run(go)
    more = len(rows) > limit
    rows = rows[:limit]
    for r in rows:
        if isinstance(r.get("detail"), str):  # JSON text on SQLite, decoded on PostgreSQL
            r["detail"] = json.loads(r["detail"])
    lines = []
    for r in rows:
        who = r.get("actor_name") or r["actor_type"]
        if r.get("actor") and r["actor"] != who:
            who += f" ({r['actor']})"  # the client id, which --actor takes
        detail = "" if r["detail"] is None else " " + json.dumps(r["detail"])
        target = f"{r['resource_type']} {r['resource_id'] or ''}".rstrip()
        lines.append(f"{r['at']}  {who}  {r['operation']}  {target}{detail}")
    _print(rows, as_json, "\n".join(lines) if lines else "no audit records")
    if more:  # a script must not take the newest N for all of them
        typer.echo(f"(the newest {limit} records; --limit for more)", err=True)


if __name__ == "__main__":
    main()
