"""The work portal: server-rendered admin pages with plain forms.

Sessions are signed cookies (HttpOnly, SameSite=Lax, Secure behind https) carrying the admin's id
and session epoch; every form carries a per-session CSRF token; sign-in attempts are throttled
per account and per address. Pages work without JavaScript; one small static script adds copy
buttons. Directory pages (users, groups, properties, audit, connection) live in
``portal_pages.py`` and register through :meth:`Portal.page`.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import itsdangerous
import sqlalchemy as sa
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from scimd.auth import admins, forms
from scimd.auth import apps as apps_mod
from scimd.scim.errors import NotFound, ScimError
from scimd.store.engine import is_disconnect
from scimd.store.onloop import DatabaseTimeout
from scimd.web.batching import until_unlocked
from scimd.web.scim import Scim

HERE = Path(__file__).parent
APPS = "/admin/security/oauth2-applications"
NAV = [
    ("/admin/users", "Users"),
    ("/admin/groups", "Groups"),
    (APPS, "OAuth 2 Applications"),
    ("/admin/properties", "Custom properties"),
    ("/admin/audit", "Audit log"),
    ("/admin/connection", "SCIM connection"),
]
Handler = Callable[[Request], Awaitable[Response]]
# A browser that signed in to an account gets a cookie saying so: a lockout by guesses from
# elsewhere does not apply to it (``LoginThrottle.attempt``).
DEVICE_COOKIE = "scimd_device"
DEVICE_SECONDS = 180 * 24 * 3600
log = logging.getLogger("scimd.portal")
SECURITY_HEADERS = {
    # Pages hold personal data, one-time set-up links and CSRF tokens: no cache keeps them.
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
}


class LoginThrottle:
    """Sign-in attempts that did not succeed, in a sliding window, per account from one
    address, per address, and per account from anywhere.

    An attempt is counted when it starts and forgiven when it succeeds: counted only after
    the password check (~0.2 s), 60 guesses sent at once were all checked against a limit
    of 5. The per-account limit from one address is the tight one: keyed on the account
    alone, anyone could keep an admin locked out with 5 requests every 15 minutes. Guesses
    from many addresses meet the wider per-account limit.
    """

    def __init__(
        self,
        per_account: int = 5,
        per_address: int = 20,
        window: float = 900,
        per_account_anywhere: int = 100,
    ) -> None:
        self.limits = {
            "pair": per_account,
            "device": per_account,
            "address": per_address,
            "account": per_account_anywhere,
        }
        self.window = window
        self._fails: dict[tuple[str, str], deque[float]] = {}

    def _recent(self, key: tuple[str, str]) -> deque[float]:
        q = self._fails.setdefault(key, deque())
        cutoff = time.monotonic() - self.window
        while q and q[0] < cutoff:
            q.popleft()
        return q

    @staticmethod
    def _keys(username: str, address: str, device: str | None = None) -> list[tuple[str, str]]:
        account = username.strip().lower()
        pair, by_address = ("pair", f"{account}\n{address}"), ("address", address)
        if device is not None:
            return [pair, by_address, ("device", f"{account}\n{device}")]
        return [pair, by_address, ("account", account)]

    def attempt(self, username: str, address: str, device: str | None = None) -> tuple[int, float]:
        """Count an attempt: (seconds until one is allowed, 0) when over a limit, else (0, its
        mark) to pass to ``succeeded``. ``device``: the id of the device cookie of a browser
        that signed in to this account before. The per-account limit from anywhere neither
        stops nor counts it, so guesses from many addresses cannot lock the admin out of
        their own browser; its own failures are limited as an address's are (OWASP's device
        cookies), so a copied cookie buys no more guesses than one address."""
        keys = self._keys(username, address, device)
        wait = 0.0
        for kind, value in keys:
            q = self._recent((kind, value))
            if len(q) >= self.limits[kind]:
                wait = max(wait, q[0] + self.window - time.monotonic())
        if wait:
            return int(wait) + 1, 0.0
        if len(self._fails) > 100_000:
            self._fails.clear()
        mark = time.monotonic()
        for key in keys:
            self._recent(key).append(mark)
        return 0, mark

    def succeeded(
        self, username: str, address: str, mark: float, device: str | None = None
    ) -> None:
        """Forgive the attempt that succeeded, and the account's failures from its address
        (and from its browser)."""
        keys = self._keys(username, address, device)
        self._fails.pop(keys[0], None)
        if device is not None:
            self._fails.pop(keys[2], None)
        for key in keys[1:]:
            q = self._fails.get(key)
            if q is not None and mark in q:
                q.remove(mark)


class CsrfError(Exception):
    pass


MAX_FORM = 64 * 1024  # bytes: the largest page form (an application's) holds a few hundred
MAX_FORM_FIELDS = 200


class FormError(Exception):
    """A posted form no handler can take (its message says why)."""


def _afresh(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """``fn(*args)``, once more on a new connection when its thread's connection turned out
    dead (PostgreSQL restarted since its last use): each portal thread answered one page with
    a 503 and a logged traceback after a restart. Nothing was done on the dead connection."""
    try:
        return fn(*args)
    except sa.exc.DBAPIError as e:
        if not is_disconnect(e):
            raise
        return fn(*args)


def _once(form: FormData) -> str | None:
    """A form's one-time id, if it carries a usable one (a script's POST carries none)."""
    once = form.get("once")
    return once if isinstance(once, str) and 0 < len(once) <= 64 else None


class Portal:
    def __init__(self, scim: Scim) -> None:
        self.scim = scim
        self.directory = scim.directory
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.throttle = LoginThrottle()
        self.cookie_key = ""  # signs device cookies: the session key, set by the app
        self.secure_cookies = False
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="scimd-portal")
        self._routes: list[BaseRoute] = [
            Route("/admin", self.home),
            Route("/admin/", self.home),
            Route("/admin/login", self.login, methods=["GET", "POST"]),
            Route("/admin/logout", self.logout, methods=["POST"]),
            Route("/admin/setup", self.setup, methods=["GET", "POST"]),
            Route(APPS, self.page(self.apps_list)),
            Route(f"{APPS}/add", self.page(self.apps_add), methods=["GET", "POST"]),
            Route(f"{APPS}/{{client_id}}", self.page(self.apps_detail)),
            Route(
                f"{APPS}/{{client_id}}/{{action}}",
                self.page(self.apps_action),
                methods=["POST"],
            ),
            Route(
                f"{APPS}/{{client_id}}/secrets/{{secret_id:int}}/revoke",
                self.page(self.secret_revoke),
                methods=["POST"],
            ),
            Mount("/admin/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ]

    def close(self) -> None:
        self.executor.shutdown(wait=True)

    def routes(self) -> list[BaseRoute]:
        return self._routes

    def add_routes(self, routes: list[BaseRoute]) -> None:
        self._routes[-1:-1] = routes

    # -- plumbing -------------------------------------------------------------------------
    async def db(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Portal queries (searches over 100k users, value counts) run off the event loop even
        on SQLite, so an admin browsing never stalls provisioning traffic."""
        loop = asyncio.get_running_loop()
        timeout = self.scim.settings.database_timeout
        if self.scim.runner is None:
            return await self._sqlite_call(loop, fn, args, timeout)
        if timeout <= 0:
            return await loop.run_in_executor(self.executor, functools.partial(_afresh, fn, args))
        thread: list[int] = []
        started = asyncio.Event()

        def call() -> Any:
            thread.append(threading.get_ident())
            loop.call_soon_threadsafe(started.set)
            return _afresh(fn, args)

        running = loop.run_in_executor(self.executor, call)
        await started.wait()  # the timeout counts from here, not from the wait for a thread
        try:
            return await asyncio.wait_for(running, timeout)
        except TimeoutError:
            # A silent PostgreSQL holds the thread until it answers: the page is answered,
            # and the thread's connections are shut down so that it is freed (else the
            # portal's two threads stayed stuck after the database came back, and a stopping
            # server waited for them forever).
            if thread:
                self.directory.sever_thread(thread[0])
            raise DatabaseTimeout(timeout) from None

    async def _sqlite_call(
        self,
        loop: asyncio.AbstractEventLoop,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        timeout: float,
    ) -> Any:
        """SQLite: a write meeting another process's write lock fails at once, and is tried
        again after an asynchronous pause, up to ``database_timeout``. Waiting inside SQLite's
        busy handler held one of the portal's two threads for 30 s each: two sign-ins froze
        every portal page, reads included. (Each portal call makes one write, its first
        change, so a call that met the lock changed nothing and is simply run again.)"""

        async def call() -> Any:
            return await loop.run_in_executor(
                self.executor, functools.partial(self._without_waiting, fn, args)
            )

        return await until_unlocked(call, timeout if timeout > 0 else math.inf)

    def _without_waiting(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        with self.directory.without_waiting():
            return fn(*args)

    async def current_admin(self, request: Request) -> admins.Admin | None:
        pk, sid = request.session.get("admin"), request.session.get("sid")
        if not isinstance(pk, int) or not isinstance(sid, str):
            return None

        def load() -> admins.Admin | None:
            with self.directory.read() as conn:
                return admins.session_admin(conn, pk, sid)

        admin: admins.Admin | None = await self.db(load)
        if admin is None or admin.session_epoch != request.session.get("epoch"):
            request.session.clear()
            return None
        return admin

    @staticmethod
    def csrf(request: Request) -> str:
        token = request.session.get("csrf")
        if not isinstance(token, str):
            token = request.session["csrf"] = secrets.token_urlsafe(32)
        return token

    async def form(self, request: Request) -> FormData:
        """The posted form, after checking its CSRF token against the session's.

        Read here, capped, before anything else: Starlette's parser buffers up to 1,000 fields
        of 1 MB each (multipart too), and the sign-in and set-up pages take posts from anyone,
        so one request could hold a gigabyte of memory (measured: 2.9 GB for three)."""
        ctype = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if ctype not in ("application/x-www-form-urlencoded", ""):  # "": an empty post
            raise FormError("Send the form as application/x-www-form-urlencoded, as its page does.")
        too_large = f"The form is larger than {MAX_FORM // 1024} KiB; no page here sends that much."
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_FORM:
            raise FormError(too_large)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM:
                raise FormError(too_large)
        try:
            pairs: list[tuple[str, str | UploadFile]] = list(
                parse_qsl(
                    body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
                )
            )
        except (UnicodeDecodeError, ValueError):
            raise FormError("The form could not be read (not UTF-8, or too many fields).") from None
        form = FormData(pairs)
        sent = form.get("csrf")
        expected = request.session.get("csrf")
        if not isinstance(sent, str) or not isinstance(expected, str):
            raise CsrfError
        if not hmac.compare_digest(sent, expected):
            raise CsrfError
        for key, value in form.multi_items():
            if "\x00" in key or (isinstance(value, str) and "\x00" in value):
                raise FormError("The form held a NUL character (U+0000), which no field can take.")
        return form

    @staticmethod
    def flash(request: Request, kind: str, text: str) -> None:
        # Assigned, not appended: the session is saved when a key is set.
        request.session["flash"] = [*request.session.get("flash", []), [kind, text]]

    def render(
        self, request: Request, template: str, status: int = 200, **ctx: Any
    ) -> HTMLResponse:
        flashes = request.session.pop("flash", []) if "flash" in request.session else []
        section = next((href for href, _ in NAV if request.url.path.startswith(href)), "")
        context = {
            # A form that makes a secret carries a one-time id (``auth.forms``).
            "once": secrets.token_urlsafe(12),
            "request": request,
            "admin": getattr(request.state, "admin", None),
            "csrf": self.csrf(request),
            "nav": NAV,
            "section": section,
            "flashes": flashes,
            "title": ctx.get("title", "scimd"),
            **ctx,
        }
        response = self.templates.TemplateResponse(request, template, context, status_code=status)
        response.headers.update(SECURITY_HEADERS)
        return response

    def page(self, handler: Handler) -> Handler:
        """Wrap a handler: signed-in admins only; CSRF failures and SCIM errors shown politely."""

        async def wrapped(request: Request) -> Response:
            admin = await self.current_admin(request)
            if admin is None:
                if request.method == "POST":  # the form is lost: say so, not just "sign in"
                    self.flash(
                        request,
                        "error",
                        "Your session had ended, so the form you sent was not saved: sign in"
                        " and send it again.",
                    )
                return RedirectResponse(
                    f"/admin/login?next={quote(_return_to(request), safe='/')}", status_code=303
                )
            request.state.admin = admin
            try:
                return await handler(request)
            except FormError as e:
                return self.render(
                    request, "message.html", 400, title="Not possible", message=str(e)
                )
            except CsrfError:
                return self.render(
                    request,
                    "message.html",
                    403,
                    title="Form expired",
                    message="This form has expired or did not come from this site. "
                    "Go back, reload the page and try again.",
                )
            except ScimError as e:
                return self.render(
                    request, "message.html", e.status, title="Not possible", message=e.detail
                )

        return wrapped

    def tenant_url(self, request: Request) -> str:
        return self.scim.base(request) + "/"

    # -- sign-in ----------------------------------------------------------------------------
    async def home(self, request: Request) -> Response:
        return RedirectResponse("/admin/connection", status_code=303)

    async def login(self, request: Request) -> Response:
        nxt = request.query_params.get("next", "/admin/")
        if request.method in ("GET", "HEAD"):  # HEAD: GET without a body
            if await self.current_admin(request) is not None:
                return RedirectResponse(_safe_next(nxt), status_code=303)

            def none_yet() -> bool:
                with self.directory.read() as conn:
                    return admins.count(conn) == 0

            return self.render(
                request,
                "login.html",
                title="Sign in",
                next=nxt,
                username="",
                error=None,
                no_admin=await self.db(none_yet),
            )
        try:
            form = await self.form(request)
        except CsrfError:
            return self.render(
                request,
                "login.html",
                403,
                title="Sign in",
                next=nxt,
                username="",
                error="The sign-in form expired; please try again.",
            )
        except FormError as e:
            return self.render(
                request, "login.html", 400, title="Sign in", next=nxt, username="", error=str(e)
            )
        username = str(form.get("username", "")).strip()
        password = str(form.get("password", ""))
        nxt = str(form.get("next", "/admin/"))
        address = request.client.host if request.client else "-"
        device = await self._known_device(request, username)
        wait, mark = self.throttle.attempt(username, address, device)
        event = {"username": username[:64], "client": address, "known_device": device is not None}

        def admin_named() -> bool:
            with self.directory.read() as conn:
                return admins.lookup(conn, username) is not None

        if wait:
            if not await self.db(admin_named):
                event["username"] = _not_a_name(username)
            log.warning("portal sign-in refused: too many failures", extra={"fields": event})
            return self.render(
                request,
                "login.html",
                429,
                title="Sign in",
                next=nxt,
                username=username,
                error=f"Too many failed sign-ins. Try again in {wait // 60 + 1} minute(s).",
            )

        known = [False]

        def check() -> admins.Candidate | None:
            with self.directory.read() as conn:
                found = admins.lookup(conn, username)
            known[0] = found is not None
            if not admins.password_matches(found, password) or found is None:
                return None  # (an unknown account is checked against a dummy digest too)
            return found

        def record(pk: int) -> None:
            with self.directory.write() as conn:
                admins.record_login(conn, pk)

        # Two calls: a write meeting SQLite's lock is run again (``db``), and with the check
        # in the same call each attempt checked the password again (argon2, ~0.2 s of CPU
        # every 50 ms while the lock was held: 25 s of CPU per sign-in).
        found: admins.Candidate | None = await self.db(check)
        if found is not None:
            await self.db(record, found.admin.pk)
        if found is None:
            if not known[0]:
                event["username"] = _not_a_name(username)
            log.warning("portal sign-in failed", extra={"fields": event})
            return self.render(
                request,
                "login.html",
                401,
                title="Sign in",
                next=nxt,
                username=username,
                error="Wrong username or password.",
            )
        admin = found.admin
        self.throttle.succeeded(username, address, mark, device)
        await self._start_session(request, admin)
        log.info("portal sign-in", extra={"fields": event})
        response = RedirectResponse(_safe_next(nxt), status_code=303)
        response.set_cookie(
            DEVICE_COOKIE,
            # The admin and its password: a password reset (or a new admin of the same name)
            # makes the cookie worthless; signing out does not.
            self._devices().dumps([admin.pk, self._password_tag(found), secrets.token_hex(8)]),
            max_age=DEVICE_SECONDS,
            path="/admin",
            secure=self.secure_cookies,
            httponly=True,
            samesite="lax",
        )
        return response

    def _devices(self) -> itsdangerous.URLSafeTimedSerializer:
        return itsdangerous.URLSafeTimedSerializer(self.cookie_key, salt="scimd device")

    async def _known_device(self, request: Request, username: str) -> str | None:
        """The id of this browser's device cookie when it signed in to ``username``'s account
        (the same admin, since its last password reset), else None."""
        cookie = request.cookies.get(DEVICE_COOKIE)
        if not cookie or not self.cookie_key or not username:
            return None
        try:
            data = self._devices().loads(cookie, max_age=DEVICE_SECONDS)
        except itsdangerous.BadData:
            return None
        if not (isinstance(data, list) and len(data) == 3):
            return None
        pk, tag, device = data

        def current() -> admins.Candidate | None:
            with self.directory.read() as conn:
                return admins.lookup(conn, username)

        found = await self.db(current)
        if found is None or found.admin.pk != pk or tag != self._password_tag(found):
            return None
        return str(device)

    def _password_tag(self, found: admins.Candidate) -> str:
        """Changes when the password does (a new salt): keyed, so the cookie, which its
        holder can read, tells nothing about the stored hash."""
        mac = hmac.new(self.cookie_key.encode(), found.password_hash.encode(), "sha256")
        return mac.hexdigest()[:16]

    async def _start_session(self, request: Request, admin: admins.Admin) -> None:
        """A fresh session (and CSRF token) after sign-in, recorded server-side."""

        def start() -> str:
            with self.directory.write() as conn:
                return admins.start_session(conn, admin.pk)

        sid = await self.db(start)
        request.session.clear()
        request.session.update(admin=admin.pk, epoch=admin.session_epoch, sid=sid)

    async def logout(self, request: Request) -> Response:
        try:
            await self.form(request)
        except (CsrfError, FormError):  # a FormError was a 500, for anyone
            return RedirectResponse("/admin/", status_code=303)
        admin = await self.current_admin(request)
        if admin is not None:
            # A copy of this cookie must not outlive the sign-out: end the admin's sessions.
            # Only a live session may (a stale or forged cookie signed out the others).
            def end() -> None:
                with self.directory.write() as conn:
                    admins.end_sessions(conn, admin.pk)

            await self.db(end)
        request.session.clear()
        return RedirectResponse("/admin/login", status_code=303)

    async def setup(self, request: Request) -> Response:
        if request.method in ("GET", "HEAD"):  # HEAD: GET without a body
            token = request.query_params.get("token", "")

            def valid() -> bool:
                with self.directory.read() as conn:
                    return admins.count(conn) == 0 and admins.setup_token_valid(conn, token)

            ok = await self.db(valid)
            return self.render(
                request,
                "setup.html",
                title="Set up",
                valid=ok,
                token=token,
                username="admin",
                error=None,
                min_password=admins.MIN_PASSWORD,
            )
        try:
            form = await self.form(request)
        except CsrfError:
            # Back to the page that held the form, its link's token included (without it the
            # page said the link was used or expired, which it was not).
            self.flash(request, "error", "The form expired: submit it again.")
            return RedirectResponse(_return_to(request), status_code=303)
        except FormError as e:
            return self.render(request, "message.html", 400, title="Set up", message=str(e))
        token = str(form.get("token", ""))
        username = str(form.get("username", "")).strip()
        password = str(form.get("password", ""))

        def complete() -> admins.Admin:
            with self.directory.write() as conn:
                return admins.complete_setup(
                    conn, token, username, password, request.state.request_id
                )

        try:
            admin: admins.Admin = await self.db(complete)
        except ScimError as e:
            return self.render(
                request,
                "setup.html",
                400,
                title="Set up",
                valid=not isinstance(e, admins.SetupLinkSpent),  # else: the link to sign in
                token=token,
                username=username,
                error=e.detail,
                min_password=admins.MIN_PASSWORD,
            )
        await self._start_session(request, admin)
        self.flash(request, "ok", f"Welcome, {admin.username}.")
        return RedirectResponse("/admin/connection", status_code=303)

    # -- OAuth 2 applications -------------------------------------------------------------
    async def apps_list(self, request: Request) -> Response:
        def load() -> list[dict[str, Any]]:
            with self.directory.read() as conn:
                return apps_mod.list_apps(conn)

        rows = await self.db(load)
        return self.render(
            request,
            "apps_list.html",
            title="OAuth 2 Applications",
            crumbs="Admin > Security",
            apps=rows,
            grants=apps_mod.GRANTS,
        )

    async def apps_add(self, request: Request) -> Response:
        blank = {"name": "", "grant": "bearer", "scopes": list(apps_mod.SCOPES), "lifetime": ""}
        if request.method in ("GET", "HEAD"):  # HEAD: GET without a body
            return self._add_form(request, blank, None)
        form = await self.form(request)
        name = str(form.get("name", "")).strip()
        grant = str(form.get("grant", "bearer"))
        scopes = [str(s) for s in form.getlist("scope")]
        raw_lifetime = str(form.get("lifetime", "")).strip()
        values: dict[str, Any] = {
            "name": name,
            "grant": grant,
            "scopes": scopes,
            "lifetime": raw_lifetime,
        }
        # Empty: the grant's default (apps.create_app). ASCII digits only: int() also took
        # "3_600" and other scripts' digits.
        if raw_lifetime and not (raw_lifetime.isascii() and raw_lifetime.isdigit()):
            return self._add_form(
                request, values, "Token lifetime must be a whole number of seconds (digits only)."
            )
        lifetime = int(raw_lifetime) if raw_lifetime else None
        admin: admins.Admin = request.state.admin
        actor = admin.actor(request.state.request_id)

        once = _once(form)

        def create() -> tuple[dict[str, Any], str]:
            with self.directory.write() as conn:
                if once:
                    forms.use_once(conn, once)
                return apps_mod.create_app(conn, name, grant, scopes, actor, lifetime)

        try:
            app, secret = await self.db(create)
        except ScimError as e:
            return self._add_form(request, values, e.detail)
        except forms.UsedBefore:  # sent twice at once (a double click): made once
            self.flash(request, "error", _RESUBMITTED)
            return RedirectResponse(APPS, status_code=303)
        return self._secret_page(request, app, secret, "Application created")

    def _add_form(self, request: Request, values: dict[str, Any], error: str | None) -> Response:
        return self.render(
            request,
            "apps_add.html",
            400 if error else 200,
            title="Add application",
            crumbs="Admin > Security > OAuth 2 Applications",
            form=values,
            scopes=apps_mod.SCOPES,
            error=error,
        )

    def _secret_page(
        self, request: Request, app: dict[str, Any], secret: str, heading: str
    ) -> Response:
        response = self.render(
            request,
            "apps_secret.html",
            title=heading,
            crumbs="Admin > Security > OAuth 2 Applications",
            heading=heading,
            app=app,
            secret=secret,
            tenant_url=self.tenant_url(request),
            token_url=self.tenant_url(request).removesuffix("/scim/v2/") + "/oauth2/server/token",
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    async def apps_detail(self, request: Request) -> Response:
        client_id = request.path_params["client_id"]

        def load() -> dict[str, Any]:
            with self.directory.read() as conn:
                return apps_mod.get_app(conn, client_id)

        try:
            app = await self.db(load)
        except NotFound:  # deleted (its audit history stays)
            return self.render(
                request,
                "audit_missing.html",
                404,
                title="Application not found",
                kind="Application",
                rid=client_id,
                back=APPS,
            )
        return self.render(
            request,
            "apps_detail.html",
            title=app["name"],
            crumbs="Admin > Security > OAuth 2 Applications",
            app=app,
            grants=apps_mod.GRANTS,
        )

    async def apps_action(self, request: Request) -> Response:
        client_id = request.path_params["client_id"]
        action = request.path_params["action"]
        form = await self.form(request)
        admin: admins.Admin = request.state.admin
        actor = admin.actor(request.state.request_id)
        actions: dict[str, Callable[[Any], Any]] = {
            "rotate": lambda c: apps_mod.rotate_secret(c, client_id, actor),
            "disable": lambda c: apps_mod.set_enabled(c, client_id, False, actor),
            "enable": lambda c: apps_mod.set_enabled(c, client_id, True, actor),
            "delete": lambda c: apps_mod.delete_app(c, client_id, actor),
        }
        if action not in actions:
            raise ScimError(f"unknown action '{action}'", status=404)
        if action == "delete" and form.get("confirm") != "yes":
            self.flash(request, "error", "Tick 'I understand' to delete the application.")
            return RedirectResponse(f"{APPS}/{client_id}", status_code=303)
        if action == "disable" and form.get("confirm") != "yes":  # one click broke Entra
            self.flash(request, "error", "Tick 'Clients using it stop working' to disable it.")
            return RedirectResponse(f"{APPS}/{client_id}", status_code=303)

        once = _once(form) if action == "rotate" else None

        def run() -> tuple[Any, dict[str, Any] | None]:
            with self.directory.write() as conn:
                if once:
                    forms.use_once(conn, once)
                result = actions[action](conn)
                app = apps_mod.get_app(conn, client_id) if action != "delete" else None
                return result, app

        try:
            result, app = await self.db(run)
        except forms.UsedBefore:  # sent twice at once (a double click): rotated once
            self.flash(request, "error", _RESUBMITTED)
            return RedirectResponse(f"{APPS}/{client_id}", status_code=303)
        if action == "rotate" and app is not None:
            return self._secret_page(request, app, result, "New client secret")
        if action == "delete":
            self.flash(request, "ok", "Application deleted.")
            return RedirectResponse(APPS, status_code=303)
        self.flash(request, "ok", f"Application {action}d.")
        return RedirectResponse(f"{APPS}/{client_id}", status_code=303)

    async def secret_revoke(self, request: Request) -> Response:
        client_id = request.path_params["client_id"]
        secret_id = request.path_params["secret_id"]
        form = await self.form(request)
        admin: admins.Admin = request.state.admin
        actor = admin.actor(request.state.request_id)
        confirmed = form.get("confirm") == "yes"

        def run() -> bool:
            with self.directory.write() as conn:
                active = [
                    s["id"]
                    for s in apps_mod.get_app(conn, client_id)["secrets"]
                    if not s["revoked"]
                ]
                if active == [secret_id] and not confirmed:
                    return False  # the last one: clients stop working, asked first
                apps_mod.revoke_secret(conn, client_id, secret_id, actor)
                return True

        if not await self.db(run):
            self.flash(
                request,
                "error",
                "That is the application's last active secret: tick the box to revoke it"
                " (clients using it stop working; rotate first to switch them).",
            )
        else:
            self.flash(request, "ok", "Secret revoked.")
        return RedirectResponse(f"{APPS}/{client_id}", status_code=303)


def _return_to(request: Request) -> str:
    """Where to go after signing in: the page asked for (with its query), or, for a form
    posted after the session ended, the page that held the form (the POST's own URL answers
    only POSTs: it was a bare 405 after sign-in)."""
    if request.method in ("GET", "HEAD"):
        query = request.url.query
        return request.url.path + (f"?{query}" if query else "")
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.netloc == request.url.netloc and referer.path.startswith("/admin"):
        return referer.path + (f"?{referer.query}" if referer.query else "")
    return "/admin/"


# A reload, or a second click: the first submission made the secret (its page may never have
# been seen: the browser shows the answer to the last).
_RESUBMITTED = (
    "That form was already submitted, and the first submission made the secret; nothing new"
    " was made. If you did not copy it, rotate the secret and revoke the old one."
)


def _not_a_name(username: str) -> str:
    """What the log says of a sign-in's username that names no admin: a password typed into
    the wrong field was logged as it was typed."""
    return f"(not an admin: {len(username)} characters)"


def _safe_next(target: str) -> str:
    """Only redirect within the portal after sign-in (no open redirects)."""
    if target.startswith("/admin") and not target.startswith("//") and "\\" not in target:
        return target
    return "/admin/"
