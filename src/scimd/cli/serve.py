"""``scimd serve``: check the address and the database, print how to start, then run uvicorn."""

from __future__ import annotations

import errno
import functools
import gc
import logging
import signal
import socket
import sys
from typing import Annotated, Any

import sqlalchemy as sa
import typer

from scimd.auth import admins as admins_mod
from scimd.cli.common import DbUrl, fail, load_settings, new_engine, note_made, self_command
from scimd.cli.urls import in_memory, not_there, safe_url, url_argument
from scimd.store import migrate
from scimd.store import properties as props_mod
from scimd.store.engine import write_transaction
from scimd.web.observability import JsonFormatter


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

    s = load_settings(
        config,
        host=host,
        port=port,
        database_url=database_url,
        public_url=public_url,
        forwarded_allow_ips=forwarded_allow_ips,
    )
    setup_logging(s.log_level)
    parsed = sa.engine.make_url(s.database_url)
    if parsed.get_backend_name() == "sqlite" and in_memory(parsed.database or ""):
        fail(
            f"{s.database_url} is an in-memory database: gone when the server stops, and out of"
            " reach of the scimd commands that create its token; use sqlite:///scimd.db"
        )
    if s.port == 0:
        fail(
            "port 0 would be a port chosen at random, which no link printed here could name:"
            " give one with --port (or SCIMD_PORT)"
        )
    _check_listen(s.host, s.port)
    made = not_there(s.database_url)
    engine = new_engine(s.database_url, s)
    migrate.ensure_current(engine)
    with engine.connect() as conn:  # before anything is printed: a refusal comes alone
        props_mod.check_urn(conn, s.properties_urn)
    with write_transaction(engine) as conn:
        n_apps: int = conn.execute(sa.text("SELECT count(*) FROM applications")).scalar_one()
        setup_token = admins_mod.new_setup_token(conn)
    shown = s.public_url or _listen_url(s.host, s.port)
    typer.echo(f"scimd serving {shown}/scim/v2/ (database {safe_url(s.database_url)})", err=True)
    note_made(made)
    typer.echo(f"Work portal: {shown}/admin/", err=True)
    if s.audit_retention_days:
        typer.echo(
            f"Audit log: records older than {s.audit_retention_days} day(s) are deleted"
            " at start and hourly (audit_retention_days)",
            err=True,
        )
    me, db = self_command(), url_argument(s.database_url)
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


def _check_listen(host: str, port: int) -> None:
    """Fail before the banner (and a set-up link for this server) when the address cannot be
    bound: uvicorn said so only after them, in a JSON log line, as if it had started."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        fail(
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
            fail(f"cannot listen on {host}:{port}: {e.strerror}; {hint}")


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if level.upper() != "DEBUG":  # "Context impl SQLiteImpl." at every start hid the banner
        logging.getLogger("alembic").setLevel(logging.WARNING)
