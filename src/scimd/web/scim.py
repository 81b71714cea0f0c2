"""The SCIM 2.0 endpoints under ``/scim/v2`` (RFC 7644 §3).

Routing is by hand so that what Entra and other clients send is tolerated: resource segments
match case-insensitively, ``//`` and a trailing slash are ignored, and Entra's feature-flag query
parameters are ignored. Each handler parses, makes one directory call and renders.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from scimd.auth import apps
from scimd.scim import passwords
from scimd.scim.errors import (
    Forbidden,
    InternalError,
    InvalidSyntax,
    InvalidToken,
    InvalidValue,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    ScimError,
    Unauthorized,
)
from scimd.scim.filter import parse
from scimd.scim.resource import parse_attribute_list, resource_id
from scimd.settings import Settings
from scimd.store.audit import Actor
from scimd.store.directory import BatchLost, Directory, Gate, Listing
from scimd.store.engine import is_busy, is_unavailable
from scimd.store.onloop import LoopRunner
from scimd.store.resources import Conditions, etag_listed
from scimd.store.versions import Versions
from scimd.web import bulk, discovery
from scimd.web.batching import GroupCommit
from scimd.web.exchange import (
    Reply,
    ScimRequest,
    error_reply,
    host_problem,
    json_reply,
    path_problem,
    reply_media,
    stopped_reply,
)
from scimd.web.outage import database_unavailable, unavailable_detail
from scimd.web.security import Credentials, FailureThrottle, request_credentials, require_scope

log = logging.getLogger("scimd.web")
# An index page this deep walks enough of the id index to run off the loop (``Work.scans``).
DEEP_PAGE = 10_000

RESOURCES = {"users": "User", "groups": "Group"}
SEARCH_REQUEST = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"


@dataclass(frozen=True, slots=True)
class Work:
    """What a request does once its caller is authorised.

    The work gets the authorisation as a gate and must pass it to the directory, which runs it
    with the version counters it reads (in the same statement as the row, where there is one)
    before anything else; a request is refused if its work never ran the gate. A write's gate
    runs inside the write's transaction, so the counters it reads are those the write sees,
    and returns the acting application for the audit log.
    """

    read: Callable[[Gate], Reply] | None = None
    write: Callable[[Gate], Reply] | None = None
    # A User write that sets a password: hashed before the write (``digest``).
    passwords: _Passwords | None = None
    # A read that may scan (a filter no index answers, a sort): on SQLite it runs in a
    # worker thread, as the portal's queries do, not on the event loop every request shares.
    scans: bool = False


@dataclass(slots=True)
class _Passwords:
    """The body of a User write that sets passwords; ``body`` gets their digests."""

    body: Any
    rid: str | None
    patch: bool
    plain: list[str]


@dataclass(frozen=True, slots=True)
class _Bulk:
    """A bulk request: authorised first, then run as one transaction per operation."""

    body: Any


MAX_START_INDEX = 2**62


class Scim:
    """Holds what the handlers share; one per app."""

    def __init__(self, settings: Settings, directory: Directory) -> None:
        self.settings = settings
        self.directory = directory
        self.throttle = FailureThrottle(settings.auth_failures_per_minute)
        self.tokens = apps.TokenCache()
        self._bases: dict[tuple[str, str, str], str] = {}
        self.cursor_key = b""  # set by the app from the database's key (scim/cursor.py)
        self._last_used: dict[tuple[int, int | None], float] = {}  # by (app, secret)
        self.group_commit = GroupCommit(directory, settings.database_timeout)
        # Searches that may scan, on SQLite (``Work.scans``): two at a time, each thread with
        # its own connection.
        self._scanner_threads: set[int] = set()
        self.scanners = ThreadPoolExecutor(
            max_workers=2,
            thread_name_prefix="scimd-search",
            initializer=lambda: self._scanner_threads.add(threading.get_ident()),
        )
        # A network database: calls run in greenlets on the loop, on their own connections.
        self.runner = (
            LoopRunner(
                directory.engine.url.render_as_string(hide_password=False),
                max(1, settings.database_connections),
                settings.database_timeout,
            )
            if directory.engine.dialect.name != "sqlite"
            else None
        )

    async def db(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Run a directory call.

        SQLite calls run on the event loop: they take microseconds and a thread hop costs
        more than the call. Network databases run them in a greenlet on the loop, which
        serves other requests while a statement waits for the server (``store.onloop``).
        """
        if self.runner is not None:
            return await self.runner.run(functools.partial(fn, *args, **kw))
        return fn(*args, **kw)

    async def write(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Run a directory write; answer only once it is committed.

        On SQLite it joins the event loop's group commit; on network databases each write
        is its own transaction (or conditional statement).
        """
        if self.runner is not None:
            return await self.db(fn, *args, **kw)
        return await self.group_commit.run(functools.partial(fn, *args, **kw))

    async def aclose(self) -> None:
        # Searches still queued are dropped (their requests were answered at shutdown) and
        # the ones running are interrupted, so that their connections close with the rest.
        self.scanners.shutdown(wait=False, cancel_futures=True)
        self.directory.interrupt_threads(self._scanner_threads)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.to_thread(self.scanners.shutdown, wait=True), 5)
        if self.runner is not None:
            await self.runner.close()

    def base(self, request: Request | ScimRequest) -> str:
        """The SCIM base URL for resource locations: the public URL, else the request's host."""
        if self.settings.public_url:
            return f"{self.settings.public_url.rstrip('/')}/scim/v2"
        if isinstance(request, Request):
            return f"{str(request.base_url).rstrip('/')}/scim/v2"
        scope = request.scope
        key = (
            scope.get("scheme", "http"),
            request.single_header("host") or "",  # two Host lines: a 400 (RFC 9112 §3.2)
            scope.get("root_path", ""),
        )
        base = self._bases.get(key)
        if base is None:
            host = key[1]
            if not host:
                server = scope.get("server") or ("localhost", None)
                host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
            base = f"{key[0]}://{host}{key[2].rstrip('/')}/scim/v2"
            if len(self._bases) < 64:  # a few host names at most; never unbounded
                self._bases[key] = base
        return base

    # -- entry point ------------------------------------------------------------------------
    async def serve(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> int:
        """Answer one request under /scim/v2 and return the status sent."""
        request = ScimRequest(scope, receive)
        head = request.method == "HEAD"
        if head:  # RFC 9110 §9.3.2: what GET would answer, without the body
            request.method = "GET"
        try:
            reply = await self.handle(request)
        except ScimError as e:
            reply = error_reply(e)
        except Exception as e:
            if is_unavailable(e):
                # The database is unreachable or dropped the connection (restart, failover),
                # or cannot be written: the request changed nothing, and the next one gets a
                # new connection.
                database_unavailable(e, f"{request.method} {request.path}")
                reply = error_reply(ScimError(unavailable_detail(e), status=503))
            else:
                log.exception("unhandled error on %s %s", request.method, request.path)
                reply = error_reply(InternalError())
        except asyncio.CancelledError:
            # Past the shutdown timeout uvicorn cancels the requests still running (they got
            # a plain-text 500): the client is told to retry. Not raised again: the request
            # is answered, and its task ends.
            reply = stopped_reply()
        reply.headers.append((b"x-request-id", request_id.encode()))
        await reply.send(send, head, reply_media(request.header("accept")))
        return reply.status

    async def handle(self, request: ScimRequest) -> Reply:
        host = request.single_header("host")  # two: a 400 "send one"
        problem = host_problem(host, request.scope.get("http_version", "1.1"))
        if problem is None and "\ufffd" in request.path:
            problem = path_problem(request.scope)
        if problem is not None:
            raise ScimError(problem, status=400)
        address = request.client_host
        # None: 401, and not a failure; two: 400 (which one would count?).
        token = request_credentials(request.single_header("authorization"))
        try:
            if request.header("expect") is not None:
                # A client waiting for "100 Continue" before it sends the body (curl does,
                # past 1 KiB): uvicorn invites the body when the route reads it, so an
                # unknown token was asked for its whole body first, then answered 401.
                await self.db(self._authenticate, token)
            try:
                work = await self.route(request)
            except ScimError as e:
                # Only an authorised caller learns what is wrong with its request.
                work = _failing(self.directory, e)
            if isinstance(work, _Bulk):
                principal = await self.db(self._authenticate, token)
                self._principal_seen(request, principal)

                def gate(conn: sa.Connection, v: Versions) -> Actor:
                    return self._principal(conn, token, v).actor(request.request_id)

                # Each operation is authorised again in its own transaction, as other writes
                # are: access revoked while a long Bulk runs refuses the operations after it.
                result = await bulk.run(self, self.base(request), work.body, gate)
                return json_reply(result)
            if work.passwords is not None:
                # Only an authorised caller costs a digest (~27 ms, off the event loop).
                await self.db(self._authenticate, token)
                await self.digest(work.passwords)
            # Authentication and the operation run as one database call: one thread hop on a
            # network database, and the version counters read for the token are those the
            # operation uses.
            if work.write is not None:
                return cast(Reply, await self.write(self._authorized, request, token, work))
            if work.scans:
                # A 55 ms table scan at 11,000 users held every other request as long (p99
                # of GET by id 4 -> 62 ms). SQLite lets go of the GIL while it scans.
                loop = asyncio.get_running_loop()
                job = functools.partial(self._authorized, request, token, work)
                return cast(Reply, await loop.run_in_executor(self.scanners, job))
            return cast(Reply, await self.db(self._authorized, request, token, work))
        except Unauthorized:
            # Failures are counted per address, but a valid token always gets in: a client
            # sharing the address of a failing one (behind NAT or a proxy) is not locked out.
            # Past the limit a failure is a 429, so that its sender backs off.
            self.throttle.failed(address)
            raise

    async def digest(self, job: _Passwords) -> None:
        """Hash a request's passwords in a worker thread, or keep the stored digest for the
        password it already is (Okta sends it in every PUT): no new version for that."""
        stored = await self.db(self.directory.stored_password, job.rid) if job.rid else None
        # Only the last password a request sets is kept (a PATCH's operations set it in
        # turn), so it alone is hashed and every earlier one takes its digest: the write
        # keeps the same password, and a Bulk of 1,000 operations setting 8 passwords each
        # cost 16,000 digests (minutes of CPU) instead of 2,000.
        last = job.plain[-1]
        digest = await asyncio.to_thread(passwords.digest_for, last, stored)
        # The others get placeholders of their own that no password verifies, so that two
        # different passwords still differ: a body giving `password` twice with different
        # values is refused, as any attribute given twice so is.
        digests = {p: passwords.Hashed(f"superseded${i}") for i, p in enumerate(job.plain)}
        digests[last] = digest
        job.body = passwords.substituted(job.body, digests, patch=job.patch)

    @staticmethod
    def _passwords(name: str, body: Any, rid: str | None, *, patch: bool) -> _Passwords | None:
        if name != "User":
            return None
        plain = passwords.plaintexts(body, patch=patch)
        if len(set(plain)) > passwords.MAX_PER_REQUEST:
            raise InvalidValue(
                f"the request sets the password {len(set(plain))} times; at most"
                f" {passwords.MAX_PER_REQUEST} are accepted (only the last one is kept)"
            )
        return _Passwords(body, rid, patch, plain) if plain else None

    def passwords_of(self, name: str, body: Any, rid: str | None, method: str) -> _Passwords | None:
        """The passwords a Bulk operation sets (POST, PUT or PATCH of a User)."""
        if method not in ("POST", "PUT", "PATCH") or (method == "POST") != (rid is None):
            return None
        return self._passwords(name, body, rid, patch=method == "PATCH")

    def _authenticate(self, token: Credentials) -> apps.Principal:
        with self.directory.read() as conn:
            return self._check(conn, token)

    def _check(self, conn: sa.Connection, token: Credentials) -> apps.Principal:
        return self._principal(conn, token, self.directory.check_versions(conn))

    def _principal(self, conn: sa.Connection, token: Credentials, v: Versions) -> apps.Principal:
        principal = self.tokens.authenticate(conn, token.token, v.auth)
        if token.client_id is not None and (
            principal is None
            or not hmac.compare_digest(principal.client_id.encode(), token.client_id.encode())
        ):
            raise InvalidToken(
                "the client id and secret are not an application's, or it has been revoked"
                " (Basic takes a Bearer token application's; a Client credentials"
                " application's secret is exchanged for a token at /oauth2/server/token)"
            )
        if principal is None:
            raise InvalidToken(
                "the bearer token is not valid, or has been revoked or expired (a Client"
                " credentials application's secret is not a token: it is exchanged for one at"
                " /oauth2/server/token)"
            )
        require_scope(principal.scopes, apps.SCIM_SCOPE)
        now = time.monotonic()
        used = (principal.app_pk, principal.secret_pk)
        # Not seen yet: -inf, not 0 (the clock counts from the host's boot, which may be
        # less than a minute ago).
        if now - self._last_used.get(used, -math.inf) > 60:
            # "Last used" for the portal, written at most once a minute per application. It
            # never waits for another process's write lock (a read would wait, and then fail,
            # for it): then it is written by a later request.
            self._last_used[used] = now
            joined = self.directory.in_write()  # the request is a write: its failure too
            try:
                with self.directory.write(wait=False) as wconn:
                    apps.touch_last_used(wconn, principal.app_pk, principal.secret_pk)
            except Exception as e:
                # Bookkeeping: a full disk, or a read-only database, failed every application's
                # first read of the minute; a database that is gone fails the request's own
                # statements next. Within a write it is that write's failure: swallowed, the
                # write went on outside the transaction SQLite had rolled back.
                if joined or not (is_unavailable(e) or isinstance(e, BatchLost)):
                    raise
                if not is_busy(e):
                    log.warning("could not record when the application was last used: %s", e)
                self._last_used[used] = now - 55  # try again in five seconds
        return principal

    def _authorized(self, request: ScimRequest, token: Credentials, work: Work) -> Reply:
        seen: list[apps.Principal] = []

        def gate(conn: sa.Connection, v: Versions) -> Actor:
            principal = self._principal(conn, token, v)
            self._principal_seen(request, principal)
            seen.append(principal)
            return principal.actor(request.request_id)

        if work.write is not None:
            reply = work.write(gate)
        else:
            assert work.read is not None
            reply = work.read(gate)
        if not seen:  # work that did not authorise its caller must not answer
            raise ScimError("internal error: the request was not authorised", status=500)
        return reply

    @staticmethod
    def _principal_seen(request: ScimRequest, principal: apps.Principal) -> None:
        request.scope.setdefault("state", {})["client_id"] = principal.client_id

    async def route(self, request: ScimRequest) -> Work | _Bulk:
        """Parse the request (reading its body) into the work to do once it is authorised."""
        path = request.path
        parts = [p for p in path[len("/scim/v2") :].split("/") if p]
        method = request.method
        base = self.base(request)
        if not parts:  # a query across resource types (RFC 7644 §3.4.2), as POST /.search
            _require(method, "GET", path)
            return self.list(request, None, base)
        head = parts[0].lower()
        d = self.directory
        if head in RESOURCES:
            name = RESOURCES[head]
            if len(parts) == 1:
                if method == "GET":
                    return self.list(request, name, base)
                if method == "POST":
                    return self.create(request, name, await self._body(request), base)
                raise MethodNotAllowed(
                    f"{method} is not allowed on /{parts[0]}", allow="GET, HEAD, POST"
                )
            if len(parts) == 2 and parts[1] == ".search":
                _require(method, "POST", path)
                return self.search(await self._body(request), name, base)
            if len(parts) == 2:
                rid = resource_id(name, parts[1])
                if method == "GET":
                    return self.get(request, name, rid, base)
                if method == "PUT":
                    return self.replace(request, await self._body(request), name, rid, base)
                if method == "PATCH":
                    return self.patch(request, await self._body(request), name, rid, base)
                if method == "DELETE":
                    return self.delete(request, name, rid)
                raise MethodNotAllowed(
                    f"{method} is not allowed on a {name}", allow="GET, HEAD, PUT, PATCH, DELETE"
                )
        elif head == ".search" and len(parts) == 1:
            _require(method, "POST", path)
            return self.search(await self._body(request), None, base)
        elif head == "bulk" and len(parts) == 1:
            _require(method, "POST", path)
            return _Bulk(await self._body(request))
        elif head == "serviceproviderconfig" and len(parts) == 1:
            _require(method, "GET", path)
            _no_filter(request)

            def config(gate: Gate) -> Reply:
                d.authorise(gate)
                return json_reply(discovery.service_provider_config(self.settings, base))

            return Work(read=config)
        elif head == "resourcetypes":
            _require(method, "GET", path)
            _no_filter(request)
            return Work(
                read=lambda gate: _one_or_list(
                    discovery.resource_types(d.resource_types(gate), base),
                    parts,
                    "name",
                    "ResourceType",
                )
            )
        elif head == "schemas":
            _require(method, "GET", path)
            _no_filter(request)
            return Work(
                read=lambda gate: _one_or_list(
                    discovery.schemas(d.resource_types(gate), base), parts, "id", "Schema"
                )
            )
        elif head == "me":
            raise ScimError("/Me is not supported: use /Users/{id}", status=501)
        raise NotFound(f"no such endpoint: {path}")

    async def _body(self, request: ScimRequest) -> Any:
        return await request.json(self.settings.max_payload)

    # -- handlers: each returns the work to run once the request is authorised ---------------
    def list(self, request: ScimRequest, name: str | None, base: str) -> Work:
        q = self._list_params(
            filter_text=request.param("filter"),
            start=request.int_param("startIndex", 1),
            count=request.int_param("count", self.settings.default_count),
            sort_by=request.param("sortBy"),
            sort_order=request.param("sortOrder"),
            attributes=request.param("attributes"),
            excluded=request.param("excludedAttributes"),
        )
        # An empty startIndex is an absent one, as it is without a cursor.
        start = request.param("startIndex") or None
        return self._listing(name, base, q, request.param("cursor"), start)

    def _listing(
        self, name: str | None, base: str, q: dict[str, Any], cursor: Any, start: Any
    ) -> Work:
        """The search ``q`` paged by index, or by cursor (RFC 9865) when ``cursor`` is given
        (empty for the first page)."""
        d = self.directory
        flt = q["flt"]
        scans = self.runner is None and (  # (PostgreSQL's calls wait off the loop anyway)
            q["sort_by"] is not None
            or (flt is not None and (name is None or not d.indexed(name, flt)))
            or q.get("start", 1) > DEEP_PAGE  # the id index walked to the page
        )
        if cursor is None:
            if name is None:
                return Work(
                    read=lambda gate: json_reply(
                        _list_body(d.search_all(base=base, gate=gate, **q))
                    ),
                    scans=scans,
                )
            return Work(
                read=lambda gate: json_reply(_list_body(d.search(name, base=base, gate=gate, **q))),
                scans=scans,
            )
        if not isinstance(cursor, str):
            raise InvalidValue("'cursor' is a string: empty for the first page, then nextCursor")
        if start is not None:
            raise InvalidValue(
                "page by startIndex or by cursor, not both: leave startIndex out to follow"
                " nextCursor"
            )
        del q["start"]
        key = self.cursor_key
        return Work(
            read=lambda gate: json_reply(
                _list_body(d.page(name, base=base, gate=gate, cursor=cursor, key=key, **q))
            ),
            scans=scans,
        )

    def search(self, body: Any, name: str | None, base: str) -> Work:
        if not isinstance(body, dict):
            raise InvalidSyntax("a SearchRequest must be a JSON object")

        def field(key: str) -> Any:
            found = [v for k, v in body.items() if k.lower() == key.lower()]
            if len(found) > 1:  # which one was meant? (Bulk refuses the same)
                raise InvalidSyntax(f"the SearchRequest has '{key}' {len(found)} times")
            return found[0] if found else None

        def join(key: str) -> str | None:
            v = field(key)
            if v is None:
                return None
            if isinstance(v, str):
                return v
            if isinstance(v, list) and all(isinstance(x, str) for x in v):
                return ",".join(v)
            raise InvalidValue(f"'{key}' must be a list of attribute paths (strings)")

        start = field("startIndex")
        count = field("count")
        # A JSON number past 64 bits arrives as a float: clamped below as a query's would be.
        if isinstance(start, float) and start.is_integer():
            start = int(start)
        if isinstance(count, float) and count.is_integer():
            count = int(count)
        for key, v in (("startIndex", start), ("count", count)):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise InvalidValue(f"'{key}' must be an integer")
        q = self._list_params(
            filter_text=field("filter"),
            start=start if start is not None else 1,
            count=count if count is not None else self.settings.default_count,
            sort_by=field("sortBy"),
            sort_order=field("sortOrder"),
            attributes=join("attributes"),
            excluded=join("excludedAttributes"),
        )
        return self._listing(name, base, q, field("cursor"), field("startIndex"))

    def _list_params(
        self,
        *,
        filter_text: Any,
        start: int,
        count: int,
        sort_by: Any,
        sort_order: Any,
        attributes: str | None,
        excluded: str | None,
    ) -> dict[str, Any]:
        if filter_text is not None and not isinstance(filter_text, str):
            raise InvalidValue("'filter' must be a string")
        if sort_by is not None and not isinstance(sort_by, str):
            raise InvalidValue("'sortBy' must be an attribute path")
        if sort_order is not None and not isinstance(sort_order, str):
            raise InvalidValue("'sortOrder' must be 'ascending' or 'descending'")
        order = (sort_order or "ascending").lower()
        if order not in ("ascending", "descending"):
            raise InvalidValue("'sortOrder' must be 'ascending' or 'descending'")
        return {
            "flt": parse(filter_text) if filter_text else None,
            # RFC 7644 §3.4.2.4: startIndex < 1 means 1; count < 0 means 0; capped at maxResults.
            # A startIndex past 2^62 is past every result too (and past a 64-bit OFFSET).
            "start": min(max(start, 1), MAX_START_INDEX),
            "count": min(max(count, 0), self.settings.max_results),
            "sort_by": sort_by or None,
            "descending": order == "descending",
            "attributes": parse_attribute_list(attributes),
            "excluded": parse_attribute_list(excluded),
        }

    def create(self, request: ScimRequest, name: str, body: Any, base: str) -> Work:
        attributes, excluded = _projection(request)
        job = self._passwords(name, body, None, patch=False)

        def work(gate: Gate) -> Reply:
            b = job.body if job is not None else body
            written = self.directory.create(name, b, gate, base, attributes, excluded)
            res = written.resource
            assert res is not None
            # Not meta.location: ``attributes`` may leave meta out; id is always returned.
            return json_reply(res, 201, written.etag, location=f"{base}/{name}s/{res['id']}")

        return Work(write=work, passwords=job)

    def get(self, request: ScimRequest, name: str, rid: str, base: str) -> Work:
        attributes, excluded = _projection(request)
        if_match = request.header("if-match")
        if_none = request.header("if-none-match")

        def work(gate: Gate) -> Reply:
            res, tag = self.directory.get(name, rid, base, attributes, excluded, gate=gate)
            # RFC 9110 §13.2.2: If-Match first (false: 412), then If-None-Match (true: 304);
            # "*" matches any current representation.
            if if_match is not None and not etag_listed(if_match, tag):  # an empty one too
                raise PreconditionFailed(
                    f"the resource is at version {tag}, not {if_match.strip() or '(empty)'}:"
                    " fetch it again"
                )
            if if_none and etag_listed(if_none, tag):
                return Reply(304, b"", [(b"etag", tag.encode())])
            return json_reply(res, 200, tag)

        return Work(read=work)

    def replace(self, request: ScimRequest, body: Any, name: str, rid: str, base: str) -> Work:
        attributes, excluded = _projection(request)
        if_match = _conditions(request)
        job = self._passwords(name, body, rid, patch=False)

        def work(gate: Gate) -> Reply:
            b = job.body if job is not None else body
            written = self.directory.replace(
                name, rid, b, gate, base, if_match, attributes, excluded
            )
            return json_reply(written.resource, 200, written.etag)

        return Work(write=work, passwords=job)

    def patch(self, request: ScimRequest, body: Any, name: str, rid: str, base: str) -> Work:
        attributes, excluded = _projection(request)
        if_match = _conditions(request)
        # Entra wants 204 for group PATCH (a body with every member is costly); users get 200
        # with the resource, as do groups when the client asks for attributes.
        render = name == "User" or bool(attributes or excluded)
        job = self._passwords(name, body, rid, patch=True)

        def work(gate: Gate) -> Reply:
            written = self.directory.patch(
                name,
                rid,
                job.body if job is not None else body,
                gate,
                base,
                if_match,
                render=render,
                attributes=attributes,
                excluded=excluded,
            )
            if not render:
                return Reply(204, b"", [(b"etag", written.etag.encode())])
            return json_reply(written.resource, 200, written.etag)

        return Work(write=work, passwords=job)

    def delete(self, request: ScimRequest, name: str, rid: str) -> Work:
        if_match = _conditions(request)

        def work(gate: Gate) -> Reply:
            self.directory.delete(name, rid, gate, if_match)
            return Reply(204)

        return Work(write=work)


def _failing(d: Directory, err: ScimError) -> Work:
    """Work that authorises the caller, then reports what is wrong with its request."""

    def work(gate: Gate) -> Reply:
        d.authorise(gate)
        raise err

    return Work(read=work)


def _conditions(request: ScimRequest) -> Conditions | None:
    """A write's ``If-Match`` and ``If-None-Match`` (RFC 7644 §3.14), None without either."""
    if_match, if_none = request.header("if-match"), request.header("if-none-match")
    # An empty If-Match is kept: no tag in it matches, and the write is refused (as nothing,
    # it let a client that sent an ETag it did not have write unconditionally).
    return Conditions(if_match, if_none) if if_match is not None or if_none else None


def _projection(request: ScimRequest) -> tuple[list[str], list[str]]:
    """``attributes`` and ``excludedAttributes`` (RFC 7644 §3.9): every reply with a resource."""
    return (
        parse_attribute_list(request.param("attributes")),
        parse_attribute_list(request.param("excludedAttributes")),
    )


def _no_filter(request: ScimRequest) -> None:
    """RFC 7644 §4: a filter on a discovery endpoint SHOULD be refused with 403, so that a
    client does not take the whole (unfiltered) answer as what matched."""
    if request.param("filter") is not None:
        raise Forbidden(
            f"{request.path} does not take a filter (RFC 7644 §4): read it whole and pick"
            " what you need"
        )


def _require(method: str, allowed: str, path: str) -> None:
    if method != allowed:
        allow = "GET, HEAD" if allowed == "GET" else allowed
        raise MethodNotAllowed(f"{method} is not allowed on {path}; use {allowed}", allow=allow)


def _list_body(listing: Listing) -> dict[str, Any]:
    if listing.by_cursor:  # RFC 9865 §2: no startIndex; nextCursor on every page but the last
        body: dict[str, Any] = {
            "schemas": [discovery.LIST_RESPONSE],
            "totalResults": listing.total,
            "itemsPerPage": len(listing.resources),
        }
        if listing.next_cursor is not None:
            body["nextCursor"] = listing.next_cursor
        body["Resources"] = listing.resources
        return body
    return {
        "schemas": [discovery.LIST_RESPONSE],
        "totalResults": listing.total,
        "itemsPerPage": len(listing.resources),
        "startIndex": listing.start,
        "Resources": listing.resources,
    }


def _one_or_list(docs: list[dict[str, Any]], parts: list[str], key: str, what: str) -> Reply:
    if len(parts) == 1:
        return json_reply(discovery.list_response(docs))
    wanted = "/".join(parts[1:]).lower()
    for d in docs:
        if str(d[key]).lower() == wanted:
            return json_reply(d)
    raise NotFound(f"no {what} '{'/'.join(parts[1:])}'")
