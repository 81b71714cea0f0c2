"""The ASGI application factory."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, AnyStr, BinaryIO

import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from scimd.auth import admins
from scimd.scim.errors import InternalError, InvalidSyntax, InvalidValue, ScimError
from scimd.settings import Settings
from scimd.store import migrate
from scimd.store import properties as props
from scimd.store.checkpoint import Checkpointer
from scimd.store.directory import Directory
from scimd.store.engine import (
    DatabaseFileGone,
    create_engine,
    is_unavailable,
    write_transaction,
)
from scimd.store.retention import AuditRetention
from scimd.web import portal_pages
from scimd.web.exchange import host_problem
from scimd.web.http import error_response
from scimd.web.oauth import TokenEndpoint
from scimd.web.observability import (
    AccessLog,
    Metrics,
    ObservabilityMiddleware,
    Observer,
    app_routes,
)
from scimd.web.outage import database_unavailable, unavailable_detail
from scimd.web.portal import Portal
from scimd.web.scim import Scim

log = logging.getLogger("scimd.web")
_SLASHES = re.compile(r"/{2,}")
_RAW_SLASHES = re.compile(rb"/{2,}")
# First path segments of SCIM requests sent to the wrong base (no /scim/v2, or another version).
_SCIM_WORDS = frozenset(
    (
        "scim",
        "v1",
        "v2",
        "users",
        "groups",
        "me",
        "bulk",
        ".search",
        "schemas",
        "resourcetypes",
        "serviceproviderconfig",
        "serviceproviderconfigs",
    )
)


def _refusal(scope: Scope, path: str) -> ScimError | None:
    """What is wrong with a request outside the SCIM API before any route sees it: its Host
    (none, two, or not a host: RFC 9112 §3.2), or a NUL in its URL (no page or form field
    takes it, and PostgreSQL cannot even look it up)."""
    hosts = [v for k, v in scope["headers"] if k == b"host"]
    if len(hosts) > 1:
        return ScimError(f"the request has {len(hosts)} Host headers; send one")
    problem = host_problem(
        hosts[0].decode("latin-1") if hosts else None, scope.get("http_version", "1.1")
    )
    if problem is not None:
        return ScimError(problem)
    if "\x00" in path or b"%00" in scope.get("query_string", b""):
        return InvalidValue("a NUL character (%00) is not allowed in the URL")
    return None


def _first_segment(request: Request) -> str:
    return request.url.path.strip("/").split("/", 1)[0].lower()


def _normalised(scope: Scope) -> Scope:
    """Collapse ``//``, drop a trailing slash, accept ``/SCIM/V2``: Entra joins
    ``<base>/scim/v2/`` and ``/Users``."""
    path = scope["path"]
    new = _fixed(path, _SLASHES, "/", "/scim/v2")
    if new == path:
        return scope
    # The raw path the same way, from its own bytes: re-encoded from the decoded path, escapes
    # that were not UTF-8 (read as U+FFFD) passed for UTF-8.
    raw = scope.get("raw_path")
    raw = _fixed(raw, _RAW_SLASHES, b"/", b"/scim/v2") if raw else new.encode()
    return dict(scope, path=new, raw_path=raw)


def _fixed(path: AnyStr, slashes: re.Pattern[AnyStr], slash: AnyStr, base: AnyStr) -> AnyStr:
    new = slashes.sub(slash, path) if slash + slash in path else path
    if len(new) > 1 and new.endswith(slash):
        new = new.rstrip(slash) or slash
    if new[:8].lower() == base and not new.startswith(base):
        new = base + new[8:]
    return new


class ScimdApp(Starlette):
    """The portal and the other routes are a Starlette app; the SCIM API is answered first.

    Requests under ``/scim/v2`` skip Starlette's middleware, exception and routing layers (the
    SCIM handler catches its own errors and reports to the observer itself): those layers cost
    about a third of a GET by id.
    """

    def __init__(self, *, scim: Scim, observer: Observer, **kw: Any) -> None:
        super().__init__(**kw)
        self.scim = scim
        self.observer = observer
        self.running = 0  # SCIM requests not yet answered

    async def drain(self, seconds: float) -> None:
        """Wait, at most ``seconds``, for the SCIM requests still running to be answered.

        Past its shutdown timeout uvicorn cancels them and shuts the app down at once: a
        request cancelled while its statement was being cancelled in the database answered
        its 503 after the access log was flushed (its line was lost), while the database
        connections were being closed, and as the process exited."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.running and loop.time() < deadline:
            await asyncio.sleep(0.01)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = _normalised(scope)
            path = scope["path"]
            if path.startswith("/scim/v2") and (len(path) == 8 or path[8] == "/"):
                started = time.perf_counter()
                rid = self.observer.start(scope)
                status = 500
                self.running += 1
                try:
                    status = await self.scim.serve(scope, receive, send, rid)
                finally:
                    try:
                        self.observer.finish(scope, rid, status, started)  # its log line
                    finally:
                        self.running -= 1
                return
            refused = _refusal(scope, path)
            if refused is not None:
                # Counted, logged and given an id as any request (scanners probing Host
                # headers were invisible in the access log and the metrics).
                started = time.perf_counter()
                rid = self.observer.start(scope)
                response: Any
                if path.startswith("/admin"):  # words for a person, not a SCIM error body
                    response = PlainTextResponse(f"Bad request: {refused.detail}.", 400)
                else:
                    response = error_response(refused)
                response.headers["x-request-id"] = rid
                try:
                    await response(scope, receive, send)
                finally:
                    self.observer.finish(scope, rid, 400, started)
                return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings, engine: sa.Engine | None = None, *, log_stream: BinaryIO | None = None
) -> Starlette:
    """Build the app for ``settings``; the engine is upgraded to the newest schema first.

    Access log lines go to ``log_stream`` (standard error by default).
    """
    engine = engine or create_engine(settings.database_url, timeout=settings.database_timeout)
    migrate.ensure_current(engine)
    urn = settings.properties_urn
    with engine.connect() as conn:
        props.check_urn(conn, urn)
        unrecorded = props.recorded_urn(conn, props.SERVER_URN_SETTING) != urn
    if unrecorded:  # so that a command run with another URN defines no property
        with write_transaction(engine) as conn:
            props.check_urn(conn, urn)
            props.record_server_urn(conn, urn)
    directory = Directory(engine, properties_urn=settings.properties_urn)
    scim = Scim(settings, directory)
    token_endpoint = TokenEndpoint(scim)
    portal = Portal(scim)
    portal.add_routes(portal_pages.routes(portal))
    metrics = Metrics()
    if scim.runner is not None:
        batch = scim.runner.batch
        metrics.add_counter(
            "scimd_db_lookups",
            "PostgreSQL lookups by id or unique name that could share a statement",
            lambda: batch.lookups,
        )
        metrics.add_counter(
            "scimd_db_lookup_statements",
            "Statements that answered those lookups (fewer: concurrent lookups share one)",
            lambda: batch.statements,
        )
    metrics.add_counter(
        "scimd_db_write_retries",
        "Writes PostgreSQL ended as deadlock victims, run again",
        lambda: directory.write_retries,
    )
    # Access lines are "info": a log_level above it drops them too (a shipper filtering by
    # level got them anyway).
    logs_info = settings.log_level.upper() in ("DEBUG", "INFO")
    access_log = AccessLog(log_stream) if settings.access_log and logs_info else None
    observer = Observer(metrics, access_log)
    with write_transaction(engine) as conn:  # made on first start: a read, then a write
        session_key = settings.session_secret or admins.session_secret(conn)
    # Cursors (RFC 9865) are sealed with a key every process of this database shares.
    scim.cursor_key = hmac.new(session_key.encode(), b"scimd cursors", hashlib.sha256).digest()
    portal.cookie_key = session_key
    portal.secure_cookies = settings.public_url.startswith("https://")

    async def healthz(request: Request) -> Response:
        def probe() -> None:
            # A table of scimd's, not SELECT 1: that answered from a database whose file was
            # gone (every request then failed on "no such table" while the check said ok).
            with directory.read() as conn:
                conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one()

        try:
            directory.check_file()
        except DatabaseFileGone:
            log.error("the database file %s was removed or replaced", engine.url.database)
            return JSONResponse(
                {
                    "status": "unavailable",
                    "detail": "the database file was removed or replaced while the server ran",
                },
                status_code=503,
            )
        try:
            await scim.db(probe)
        except Exception as e:
            if not is_unavailable(e):
                raise
            # As for requests: a traceback at most every ten seconds (a probe every second
            # during an outage wrote one each).
            database_unavailable(e, "GET /healthz")
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def root(request: Request) -> Response:
        return JSONResponse(
            {
                "service": "scimd",
                "scim": f"{scim.base(request)}/",
                "portal": f"{scim.base(request).removesuffix('/scim/v2')}/admin/",
                "health": "/healthz",
            }
        )

    checkpointer = Checkpointer(engine)  # SQLite: WAL checkpoints off the request path
    retention = AuditRetention(engine, settings.audit_retention_days)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        checkpointer.start()
        retention.start()
        # The first unknown username costs what a known one does (admins.password_matches).
        warming = asyncio.get_running_loop().run_in_executor(None, admins.prepare)
        yield
        await warming
        if isinstance(app, ScimdApp):
            await app.drain(5)  # the requests uvicorn cancelled answer first
        retention.stop()
        if access_log is not None:
            access_log.flush()
        portal.close()
        await scim.aclose()
        directory.close()
        checkpointer.stop()
        engine.dispose()

    async def client_gone(request: Request, exc: Exception) -> Response:
        # The client closed the connection in the middle of its body (or the server closed
        # it after the body paused too long): nobody reads this answer, and nothing failed.
        log.info("client went away during %s %s", request.method, request.url.path)
        return error_response(InvalidSyntax("the client went away before sending the whole body"))

    async def database_gone(request: Request, exc: Exception) -> Response:
        # The portal's and the token endpoint's pages, as the SCIM API does: a 503 "retry",
        # answered (with its request id) on a connection that stays usable. As a 500 it went
        # through Starlette's last-resort handler, which re-raises: uvicorn then closed the
        # keep-alive connection unannounced, and the client's next request was reset.
        assert isinstance(exc, Exception)
        if not is_unavailable(exc):  # a database error that is a fault of scimd's
            return await server_error(request, exc)
        database_unavailable(exc, f"{request.method} {request.url.path}")
        if _first_segment(request) == "admin":  # the portal's page, not SCIM's JSON
            page = portal.render(
                request,
                "message.html",
                503,
                title="Try again later",
                message=f"The work portal could not use its database: {unavailable_detail(exc)}.",
            )
            page.headers["Retry-After"] = "5"
            return page
        return error_response(
            ScimError(unavailable_detail(exc), status=503),
            {"Retry-After": "5"},
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        # A Tenant URL missing its /scim/v2 (https://HOST/, https://HOST/scim) got a bare
        # "Not Found": Test Connection then failed without a word on what was wrong.
        first = _first_segment(request)
        if first in _SCIM_WORDS:
            base = scim.base(request)
            return error_response(
                ScimError(
                    f"no SCIM endpoint at {request.url.path}: this server's SCIM base is"
                    f" {base}/ (the Tenant URL to give Entra ID), e.g. {base}/Users",
                    status=404,
                )
            )
        if first == "admin":  # the portal's own page, not a bare "Not Found"
            return portal.render(
                request,
                "message.html",
                404,
                title="Not found",
                message="There is no such page in the work portal.",
            )
        detail = getattr(exc, "detail", "Not Found")
        return PlainTextResponse(str(detail), status_code=404)

    async def not_allowed(request: Request, exc: Exception) -> Response:
        headers = getattr(exc, "headers", None) or {}
        if _first_segment(request) == "admin":
            page = portal.render(
                request,
                "message.html",
                405,
                title="Not possible",
                message=f"This page does not take a {request.method} request: use the portal's"
                " links and buttons.",
            )
            page.headers.update(headers)
            return page
        return PlainTextResponse("Method Not Allowed", status_code=405, headers=headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(InternalError())

    app = ScimdApp(
        scim=scim,
        observer=observer,
        routes=[
            Route("/", root),
            Route("/healthz", healthz),
            Route("/metrics", metrics_endpoint),
            Route("/oauth2/server/token", token_endpoint.handle, methods=["POST"]),
            *portal.routes(),
        ],
        lifespan=lifespan,
        exception_handlers={
            404: not_found,
            405: not_allowed,
            ClientDisconnect: client_gone,
            sa.exc.DBAPIError: database_gone,
            sqlite3.Error: database_gone,
            Exception: server_error,
        },
    )
    observer.routes = app_routes(app.routes)
    app.state.settings = settings
    app.state.directory = directory
    app.state.portal = portal
    app.state.engine = engine
    # Portal sessions: signed cookies, HttpOnly, SameSite=Lax; Secure when served over https.
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_key,
        session_cookie="scimd_session",
        max_age=admins.SESSION_SECONDS,
        same_site="lax",
        https_only=settings.public_url.startswith("https://"),
    )
    app.add_middleware(ObservabilityMiddleware, observer=observer)
    return app
