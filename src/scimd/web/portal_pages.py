"""Directory pages of the work portal (users, groups, properties, audit, connection).

Every handler is wrapped with :meth:`Portal.page` (signed-in admins only, CSRF failures and SCIM
errors shown politely). Lists read one page at a time (see ``scimd.store.browse``): unfiltered
user and group lists go through the directory, whose totals come from a cached counter; searches
fetch one row more than a page to know whether a next page exists instead of counting every
match; the audit log pages by primary key.

The SCIM connection page can run Entra ID's "Test Connection" request against the server's own
Tenant URL over real HTTP. It uses ``httpx.AsyncClient``, so while the portal request waits the
event loop (which runs the SQLite calls) keeps serving the SCIM request it sent.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from scimd.auth import admins
from scimd.scim import schema as S
from scimd.scim.errors import InvalidValue, NotFound, ScimError
from scimd.scim.filter import And, AttrPath, Compare, Filter, Or, parse
from scimd.scim.query import sort_path
from scimd.store import audit as A
from scimd.store import browse
from scimd.store import properties as props
from scimd.store.migrate import DatabaseUnsupported
from scimd.store.resources import GROUPS, USERS
from scimd.web.portal import APPS, Portal

if TYPE_CHECKING:
    import httpx

PAGE_SIZE = 50
HISTORY_LIMIT = 100
CHECK_TIMEOUT = 5.0
BODY_LIMIT = 2000
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
# What the simple user search box matches (each with ``co``, joined with ``or``).
USER_SEARCH_PATHS = (
    AttrPath(None, "userName"),
    AttrPath(None, "name", "formatted"),
    AttrPath(None, "name", "givenName"),
    AttrPath(None, "name", "familyName"),
    AttrPath(None, "displayName"),
    AttrPath(None, "emails", "value"),
)
ACTOR_TYPES = {"app": "application", "admin": "admin", "cli": "command line", "system": "system"}
OPERATIONS = (
    "create",
    "replace",
    "patch",
    "delete",
    "member.delete",
    "property.add",
    "property.remove",
    "app.create",
    "app.rotate",
    "app.revoke_secret",
    "app.revoke",
    "app.enable",
    "app.disable",
    "app.delete",
    "token.issue",
    "admin.create",
    "admin.reset_password",
    "admin.delete",
    "audit.prune",
)
UNSUPPORTED_NOTE = (
    "Only basic, single-valued types are offered, as in Entra's set-up for this app: references "
    "to other objects, multi-valued lists, complex (structured) values and values linked to "
    "parametric tables cannot be custom properties."
)


def routes(portal: Portal) -> list[BaseRoute]:
    pages = Pages(portal)
    return [
        Route("/admin/users", portal.page(pages.users)),
        Route("/admin/users/{id}", portal.page(pages.user)),
        Route("/admin/groups", portal.page(pages.groups)),
        Route("/admin/groups/{id}", portal.page(pages.group)),
        Route("/admin/properties", portal.page(pages.properties), methods=["GET", "POST"]),
        Route(
            "/admin/properties/{name}/remove",
            portal.page(pages.property_remove),
            methods=["POST"],
        ),
        Route("/admin/audit", portal.page(pages.audit)),
        Route("/admin/connection", portal.page(pages.connection), methods=["GET", "POST"]),
    ]


# ---------------------------------------------------------------------------------------------
# Helpers (pure functions, tested directly)


def user_search_filter(text: str) -> Filter:
    """``userName co "x" or name.formatted co "x" or ...`` built as a tree (no text pasting)."""
    nodes: list[Filter] = [Compare(path, "co", text) for path in USER_SEARCH_PATHS]
    return functools.reduce(Or, nodes)


# The search box's text: a longer one was a 503 on SQLite ("LIKE or GLOB pattern too
# complex", logged as an outage), as the boxes build their filter without the parser's bound.
MAX_SEARCH = 256


def _search_text(params: Mapping[str, str]) -> str:
    q = params.get("q", "").strip()
    if len(q) > MAX_SEARCH:
        raise InvalidValue(f"the search text is longer than {MAX_SEARCH} characters: shorten it")
    return q


def _combine(*filters: Filter | None) -> Filter | None:
    present = [f for f in filters if f is not None]
    return functools.reduce(And, present) if present else None


MAX_INT = 2**62  # query parameters beyond this would overflow a database integer


def _int(value: str | None, default: int, minimum: int = 1) -> int:
    try:
        n = int(value) if value else default
    except ValueError:
        return default
    return min(max(n, minimum), MAX_INT)


MAX_PK = 2**31 - 1  # primary keys are 32-bit integers on PostgreSQL (a larger one was a 500)


def _opt_int(value: str | None) -> int | None:
    """A primary key bound (the audit log's ``before``/``after``), within range."""
    try:
        return min(max(int(value), 0), MAX_PK) if value else None
    except ValueError:
        return None


def _href(path: str, **params: Any) -> str:
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path


def _pick(items: Any, wanted: str) -> tuple[str, str] | None:
    """(value, type) of the element of type ``wanted``, else the primary, else the first."""
    if not isinstance(items, list):
        return None
    dicts = [i for i in items if isinstance(i, dict) and i.get("value")]
    chosen = (
        next((i for i in dicts if str(i.get("type", "")).lower() == wanted), None)
        or next((i for i in dicts if i.get("primary") is True), None)
        or (dicts[0] if dicts else None)
    )
    if chosen is None:
        return None
    return str(chosen["value"]), str(chosen.get("type") or "")


def user_row(res: dict[str, Any]) -> dict[str, Any]:
    """What the users list shows of one user."""
    raw = res.get("name")
    name: dict[str, Any] = raw if isinstance(raw, dict) else {}
    parts = [name.get("givenName"), name.get("familyName")]
    shown = (
        res.get("displayName")
        or name.get("formatted")
        or " ".join(str(p) for p in parts if p)
        or None
    )
    return {
        "id": res["id"],
        "userName": res.get("userName", ""),
        "name": shown,
        "email": _pick(res.get("emails"), "work"),
        "active": res.get("active"),
        "modified": res.get("meta", {}).get("lastModified", ""),
    }


_FIRST_COLUMNS = ("value", "display", "type", "primary")


def view(value: Any) -> dict[str, Any]:
    """A JSON value as a small tree the templates render (see ``users_macros.html``).

    Objects become definition lists, arrays of objects tables (emails, phone numbers,
    addresses), other arrays lists; booleans and missing values are spelled out.
    """
    if value is None:
        return {"k": "none"}
    if isinstance(value, bool):
        return {"k": "bool", "v": value}
    if isinstance(value, dict):
        return {"k": "map", "items": [(str(k), view(v)) for k, v in value.items()]}
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            keys = list(dict.fromkeys(k for v in value for k in v))
            cols = [c for c in _FIRST_COLUMNS if c in keys] + [
                c for c in keys if c not in _FIRST_COLUMNS
            ]
            rows = [[view(v[c]) if c in v else {"k": "blank"} for c in cols] for v in value]
            return {"k": "table", "cols": cols, "rows": rows}
        return {"k": "list", "items": [view(v) for v in value]}
    return {"k": "text", "v": str(value)}


def compact_json(value: Any, limit: int = 600) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


# A detail longer than this is cut in the page too, with the command that prints it whole.
FULL_DETAIL_LIMIT = 200_000


def full_detail(value: Any, shown: str) -> str | None:
    """A record's whole detail, indented, when the table shows it shortened (a change of
    40 members named 15): None when ``shown`` is the whole of it."""
    if value is None or not shown.endswith("…"):
        return None
    data = orjson.loads(value) if isinstance(value, str) else value
    text = orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()
    if len(text) > FULL_DETAIL_LIMIT:
        rest = len(text) - FULL_DETAIL_LIMIT
        text = text[:FULL_DETAIL_LIMIT] + f"\n… {rest:,} more characters: scimd audit list --json"
    return text


def audit_rows(
    rows: list[dict[str, Any]], users: set[str], groups: set[str], apps: set[str]
) -> list[dict[str, Any]]:
    """Audit rows as the templates show them; users, groups and applications that still exist
    get a link."""
    out = []
    for r in rows:
        rid = r.get("resource_id") or ""
        link = None
        if r["resource_type"] == "User" and rid in users:
            link = f"/admin/users/{rid}"
        elif r["resource_type"] == "Group" and rid in groups:
            link = f"/admin/groups/{rid}"
        elif r["resource_type"] == "Application" and rid in apps:
            link = f"{APPS}/{rid}"
        actor = r.get("actor")
        out.append(
            {
                "pk": r["pk"],
                "at": r["at"],
                "actor_type": ACTOR_TYPES.get(r["actor_type"], r["actor_type"]),
                "actor_name": r.get("actor_name") or r.get("actor") or "",
                "actor_id": actor if actor != r.get("actor_name") else None,
                "actor_link": f"{APPS}/{actor}"
                if r["actor_type"] == "app" and actor in apps
                else None,
                "operation": r["operation"],
                "resource_type": r["resource_type"],
                "resource_id": rid,
                "link": link,
                "detail": (shown := compact_json(r.get("detail"))),
                "full_detail": full_detail(r.get("detail"), shown),
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# Test connection


@dataclass(frozen=True, slots=True)
class ConnectionCheck:
    """The outcome of Entra's "Test Connection" request, explained for a person."""

    ok: bool
    headline: str
    explanation: str
    request: str
    status: int | None = None
    body: str = ""


async def check_connection(
    tenant_url: str,
    token: str,
    *,
    timeout: float = CHECK_TIMEOUT,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ConnectionCheck:
    """Send ``GET <tenant>/Users?filter=userName eq "<random guid>"`` with the bearer token.

    That is the request Entra ID's "Test Connection" sends; it passes on 200 with an empty
    ListResponse. The token is never part of the result.
    """
    url = tenant_url.rstrip("/") + "/Users"
    probe = str(Compare(AttrPath(None, "userName"), "eq", str(uuid.uuid4())))
    shown = f"GET {url}?filter={probe}"
    if not token or any(c.isspace() or not c.isprintable() or not c.isascii() for c in token):
        return ConnectionCheck(
            False,
            "Not a token",
            "Paste the application's client secret: one word of letters, digits and "
            "punctuation, without spaces.",
            shown,
        )
    import httpx  # here: ~65 ms of imports every server start paid for a button's check

    try:
        async with httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, transport=transport
        ) as client:
            r = await client.get(
                url,
                params={"filter": probe},
                headers={"Authorization": f"Bearer {token}", "Accept": "application/scim+json"},
            )
    except httpx.HTTPError as e:
        return ConnectionCheck(
            False,
            "The server could not be reached at its Tenant URL",
            f"{type(e).__name__}: {e}. The test calls the Tenant URL from the server itself; "
            "if the server sits behind a proxy, set its public URL (SCIMD_PUBLIC_URL) to the "
            "address Entra ID uses.",
            shown,
        )
    doc = _json(r)
    body = r.text if doc is None else orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
    if len(body) > BODY_LIMIT:
        body = body[:BODY_LIMIT] + "\n…"
    return _explain(r.status_code, doc, body, shown)


def _json(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return None


def _explain(status: int, doc: Any, body: str, shown: str) -> ConnectionCheck:
    if status == 200:
        schemas = doc.get("schemas") if isinstance(doc, dict) else None
        if isinstance(schemas, list) and LIST_RESPONSE in schemas and doc.get("totalResults") == 0:
            return ConnectionCheck(
                True,
                "Connection test passed",
                "The server accepted the Secret Token and answered the probe with an empty "
                "list, which is what Entra ID's Test Connection expects.",
                shown,
                status,
            )
        return ConnectionCheck(
            False,
            "Unexpected answer",
            "The server answered 200 but not with the empty SCIM ListResponse Entra ID expects.",
            shown,
            status,
            body,
        )
    explanations = {
        401: (
            "The Secret Token was refused",
            "The token is wrong, was revoked, or its application is disabled or deleted (or an "
            "access token expired). Copy the client secret again, or rotate it under "
            "OAuth 2 Applications (in the top bar). A Client credentials application's "
            "secret is not a token: it is exchanged at /oauth2/server/token.",
        ),
        403: (
            "The token lacks the USER SYNC scope",
            "The token is valid but its application is not allowed to provision users. Create "
            "the application with the scopes API and USER SYNC.",
        ),
        404: (
            "The Tenant URL does not lead to the SCIM endpoint",
            "Use the Tenant URL shown on this page, ending in /scim/v2/.",
        ),
        429: (
            "Too many failed attempts",
            "This address sent too many wrong tokens; wait a minute and try again.",
        ),
    }
    headline, explanation = explanations.get(
        status,
        (f"The server answered {status}", "See the response below."),
    )
    return ConnectionCheck(False, headline, explanation, shown, status, body)


# ---------------------------------------------------------------------------------------------
# Pages


@dataclass
class Listed:
    rows: list[dict[str, Any]]
    has_next: bool
    total: int | None


class Pages:
    def __init__(self, portal: Portal) -> None:
        self.portal = portal
        self.directory = portal.directory

    def _base(self, request: Request) -> str:
        return self.portal.scim.base(request)

    def _actor(self, request: Request) -> A.Actor:
        admin: admins.Admin = request.state.admin
        return admin.actor(request.state.request_id)

    async def _read(self, fn: Callable[[Any], Any]) -> Any:
        def run() -> Any:
            with self.directory.read() as conn:
                return fn(conn)

        return await self.portal.db(run)

    async def _write(self, fn: Callable[[Any], Any]) -> Any:
        def run() -> Any:
            with self.directory.write() as conn:
                return fn(conn)

        return await self.portal.db(run)

    # -- users ------------------------------------------------------------------------------
    async def users(self, request: Request) -> Response:
        params = request.query_params
        q = params.get("q", "").strip()
        advanced = params.get("filter", "").strip()
        start = _int(params.get("startIndex"), 1)
        sort_by = params.get("sortBy", "").strip() or "userName"
        descending = params.get("sortOrder", "").lower() == "descending"
        base = self._base(request)
        error = None
        listed = Listed([], False, 0)
        try:
            _search_text(params)
            flt = _combine(
                parse(advanced) if advanced else None, user_search_filter(q) if q else None
            )
            listed = await self.portal.db(
                self._find, "User", flt, base, start, sort_by, descending, q
            )
        except ScimError as e:
            error = e.detail
        keep = {"q": q, "filter": advanced}
        if sort_by != "userName" or descending:
            keep.update(sortBy=sort_by, sortOrder="descending" if descending else "")
        return self.render_list(
            request, "users.html", "Users", listed, start, error, keep, "/admin/users"
        )

    def _find(
        self,
        name: str,
        flt: Filter | None,
        base: str,
        start: int,
        sort_by: str,
        desc: bool,
        search: str,
    ) -> Listed:
        """A page of users or groups; totals only where they are free (unfiltered, or short).

        ``search``: the search box's text, which every match holds somewhere (or "").
        """
        summarise = user_row if name == "User" else group_row
        excluded = ["groups"] if name == "User" else ["members"]
        if flt is None:
            listing = self.directory.search(
                name,
                None,
                base,
                start=start,
                count=PAGE_SIZE,
                sort_by=sort_by,
                descending=desc,
                excluded=excluded,
            )
            rows = [summarise(r) for r in listing.resources]
            has_next = start - 1 + len(rows) < listing.total
            listed = Listed(rows, has_next, listing.total)
        else:
            kind = USERS if name == "User" else GROUPS
            with self.directory.read() as conn:
                rt = self.directory.resource_type(conn, name)
                page = browse.find(
                    conn,
                    kind,
                    rt,
                    flt,
                    start=start,
                    count=PAGE_SIZE,
                    sort_by=sort_path(rt, sort_by),
                    descending=desc,
                    text_hint=search or None,
                )
                repo = self.directory.repos[name]
                rows = [summarise(repo.render(r, rt, base)) for r in page.rows]
            known = start == 1 and not page.has_next
            listed = Listed(rows, page.has_next, len(rows) if known else None)
        if name == "Group" and listed.rows:
            with self.directory.read() as conn:
                counts = browse.member_counts(conn, [r["id"] for r in listed.rows])
            for r in listed.rows:
                r["members"] = counts.get(r["id"], 0)
        return listed

    def render_list(
        self,
        request: Request,
        template: str,
        title: str,
        listed: Listed,
        start: int,
        error: str | None,
        keep: dict[str, str],
        path: str,
    ) -> Response:
        prev_href = _href(path, **keep, startIndex=max(1, start - PAGE_SIZE)) if start > 1 else None
        next_href = _href(path, **keep, startIndex=start + PAGE_SIZE) if listed.has_next else None
        return self.portal.render(
            request,
            template,
            400 if error else 200,
            title=title,
            error=error,
            rows=listed.rows,
            total=listed.total,
            first=start,
            last=start + len(listed.rows) - 1,
            page_number=(start - 1) // PAGE_SIZE + 1,
            prev_href=prev_href,
            next_href=next_href,
            searching=any(keep.get(k) for k in ("q", "filter")),
            **keep,
        )

    async def user(self, request: Request) -> Response:
        uid = request.path_params["id"]
        base = self._base(request)
        urn = self.portal.scim.settings.properties_urn

        def load() -> tuple[dict[str, Any], list[S.PropertyDef], list[dict[str, Any]]] | None:
            try:
                res, _ = self.directory.get("User", uid, base)
            except NotFound:
                return None
            with self.directory.read() as conn:
                defs = props.list_properties(conn)
                history = A.history(conn, resource_id=uid, limit=HISTORY_LIMIT)
                apps = browse.application_ids(conn)
            return res, defs, audit_rows(history, {uid}, set(), apps)

        found = await self.portal.db(load)
        if found is None:
            return await self._missing(request, "User", uid)
        res, defs, history = found
        custom = res.get(urn) if isinstance(res.get(urn), dict) else {}
        core = _core_attributes(res, "groups")
        extensions = [
            (k, [(sk, view(sv)) for sk, sv in v.items()])
            for k, v in res.items()
            if k.lower().startswith("urn:") and k != urn and isinstance(v, dict)
        ]
        return self.portal.render(
            request,
            "users_detail.html",
            title=res.get("userName", uid),
            crumbs="Users",
            user=res,
            core=core,
            extensions=extensions,
            enterprise=S.ENTERPRISE_SCHEMA,
            urn=urn,
            custom=[(d, view(custom[d.name]) if d.name in custom else None) for d in defs],
            groups=res.get("groups", []),
            meta=res.get("meta", {}),
            history=history,
            history_limit=HISTORY_LIMIT,
        )

    async def _missing(self, request: Request, kind: str, rid: str) -> Response:
        return self.portal.render(
            request,
            "audit_missing.html",
            404,
            title=f"{kind} not found",
            kind=kind,
            rid=rid,
            back="/admin/users" if kind == "User" else "/admin/groups",
        )

    # -- groups -----------------------------------------------------------------------------
    async def groups(self, request: Request) -> Response:
        params = request.query_params
        q = params.get("q", "").strip()
        start = _int(params.get("startIndex"), 1)
        base = self._base(request)
        flt = Compare(AttrPath(None, "displayName"), "co", q) if q else None
        error = None
        listed = Listed([], False, 0)
        try:
            _search_text(params)
            listed = await self.portal.db(
                self._find, "Group", flt, base, start, "displayName", False, q
            )
        except ScimError as e:
            error = e.detail
        return self.render_list(
            request, "groups.html", "Groups", listed, start, error, {"q": q}, "/admin/groups"
        )

    async def group(self, request: Request) -> Response:
        gid = request.path_params["id"]
        start = _int(request.query_params.get("startIndex"), 1)
        base = self._base(request)

        def load() -> tuple[dict[str, Any], browse.MemberPage, list[dict[str, Any]]] | None:
            try:
                res, _ = self.directory.get("Group", gid, base, excluded=["members"])
            except NotFound:
                return None
            with self.directory.read() as conn:
                page = browse.group_members(conn, gid, start=start, count=PAGE_SIZE)
                history = A.history(conn, resource_id=gid, limit=HISTORY_LIMIT)
                apps = browse.application_ids(conn)
            return res, page, audit_rows(history, set(), {gid}, apps)

        found = await self.portal.db(load)
        if found is None:
            return await self._missing(request, "Group", gid)
        res, page, history = found
        path = f"/admin/groups/{gid}"
        attrs = _core_attributes(res, "members")
        return self.portal.render(
            request,
            "groups_detail.html",
            title=res.get("displayName", gid),
            crumbs="Groups",
            group=res,
            attrs=attrs,
            meta=res.get("meta", {}),
            members=page.members,
            member_total=page.total,
            first=start,
            last=start + len(page.members) - 1,
            prev_href=_href(path, startIndex=max(1, start - PAGE_SIZE)) if start > 1 else None,
            next_href=_href(path, startIndex=start + PAGE_SIZE) if page.has_next else None,
            history=history,
            history_limit=HISTORY_LIMIT,
        )

    # -- custom properties ------------------------------------------------------------------
    async def properties(self, request: Request) -> Response:
        values = {"name": "", "type": "String", "description": ""}
        if request.method in ("GET", "HEAD"):  # HEAD: GET without a body
            return await self._properties_page(request, values, None)
        form = await self.portal.form(request)
        values = {
            "name": str(form.get("name", "")).strip(),
            "type": str(form.get("type", "")).strip(),
            "description": str(form.get("description", "")).strip(),
        }
        actor = self._actor(request)
        urn = self.portal.scim.settings.properties_urn

        def add(conn: Any) -> S.PropertyDef:
            return props.add_property(
                conn, values["name"], values["type"], values["description"], actor, urn
            )

        try:
            added: S.PropertyDef = await self._write(add)
        except ScimError as e:
            return await self._properties_page(request, values, e.detail)
        except DatabaseUnsupported as e:  # set to another URN than the database's
            return await self._properties_page(request, values, str(e))
        self.portal.flash(
            request,
            "ok",
            f"Property {added.name} ({added.type}) added. In Entra ID its target attribute is "
            f"{urn}:{added.name}.",
        )
        return RedirectResponse("/admin/properties", status_code=303)

    async def _properties_page(
        self, request: Request, values: dict[str, str], error: str | None
    ) -> Response:
        urn = self.portal.scim.settings.properties_urn

        def load(conn: Any) -> tuple[list[S.PropertyDef], dict[str, int]]:
            defs = props.list_properties(conn)
            return defs, props.value_counts(conn, [d.name for d in defs], urn)

        defs, counts = await self._read(load)
        return self.portal.render(
            request,
            "properties.html",
            400 if error else 200,
            title="Custom user properties",
            properties=[(d, counts.get(d.name, 0)) for d in defs],
            urn=urn,
            types=list(S.PROPERTY_TYPES),
            form=values,
            error=error,
            note=UNSUPPORTED_NOTE,
        )

    async def property_remove(self, request: Request) -> Response:
        name = request.path_params["name"]
        form = await self.portal.form(request)
        confirmed = form.get("confirm") == "yes"
        urn = self.portal.scim.settings.properties_urn
        actor = self._actor(request)

        def remove(conn: Any) -> tuple[S.PropertyDef, int, bool]:
            """(definition, values held, removed?): the admin confirms first."""
            d = next(
                (d for d in props.list_properties(conn) if d.name.lower() == name.lower()), None
            )
            if d is None:
                raise NotFound(f"custom property '{name}' is not defined")
            if not confirmed:  # one click broke Entra's next write of the attribute
                return d, props.count_values(conn, d.name, urn), False
            try:  # values are counted with user writes held off
                _, held = props.remove_property(conn, d.name, actor, urn, confirmed=confirmed)
            except props.ValuesHeld as e:
                return d, e.held, False
            return d, held, True

        d, held, removed = await self._write(remove)
        if not removed:
            return self.portal.render(
                request,
                "properties_remove.html",
                title=f"Remove {d.name}?",
                crumbs="Custom properties",
                prop=d,
                held=held,
                urn=urn,
            )
        suffix = f"; the values of {held} user(s) were deleted" if held else ""
        self.portal.flash(request, "ok", f"Property {d.name} removed{suffix}.")
        return RedirectResponse("/admin/properties", status_code=303)

    # -- audit log --------------------------------------------------------------------------
    async def audit(self, request: Request) -> Response:
        p = request.query_params
        form = {
            "who": p.get("who", "").strip(),
            "type": p.get("type", "").strip(),
            "resource": p.get("resource", "").strip(),
            "operation": p.get("operation", "").strip(),
            "from": p.get("from", "").strip(),
            "to": p.get("to", "").strip(),
        }
        error = None
        since = until = ""
        try:
            if form["from"]:
                since = date.fromisoformat(form["from"]).isoformat()
            if form["to"]:
                to = date.fromisoformat(form["to"])
                # The day after, as a bound; 9999-12-31 has none (it was a 500).
                until = "" if to == date.max else (to + timedelta(days=1)).isoformat()
        except ValueError:
            error = "Dates are written YYYY-MM-DD."
        if since and until and since >= until:
            error = "The 'from' date is after the 'to' date."
        query = browse.AuditQuery(
            who=form["who"],
            actor_type=form["type"] if form["type"] in ACTOR_TYPES else "",
            resource_id=form["resource"],
            operation=form["operation"],
            since=since,
            until=until,
        )
        before = _opt_int(p.get("before"))
        after = _opt_int(p.get("after")) if before is None else None

        def load(conn: Any) -> tuple[browse.AuditPage, list[dict[str, Any]], Any]:
            actors = browse.known_actors(conn)
            if error:
                return browse.AuditPage([], None, None), [], actors
            page = browse.audit_page(conn, query, before=before, after=after, count=PAGE_SIZE)
            ids = [r["resource_id"] for r in page.rows]
            users = browse.existing_ids(conn, USERS, ids)
            groups = browse.existing_ids(conn, GROUPS, ids)
            apps = browse.application_ids(conn)
            return page, audit_rows(page.rows, users, groups, apps), actors

        page, rows, actors = await self._read(load)
        operations = list(OPERATIONS)
        if form["operation"] and form["operation"] not in operations:
            operations.append(form["operation"])
        older = _href("/admin/audit", **form, before=page.older) if page.older else None
        newer = _href("/admin/audit", **form, after=page.newer) if page.newer else None
        return self.portal.render(
            request,
            "audit.html",
            400 if error else 200,
            title="Audit log",
            error=error,
            form=form,
            rows=rows,
            actors=actors,
            actor_types=ACTOR_TYPES,
            operations=operations,
            older_href=older,
            newer_href=newer,
            newest_href=_href("/admin/audit", **form) if (before or after) else None,
            filtered=any(form.values()),
        )

    # -- SCIM connection --------------------------------------------------------------------
    async def connection(self, request: Request) -> Response:
        tenant_url = self.portal.tenant_url(request)
        result: ConnectionCheck | None = None
        status = 200
        if request.method == "POST":
            form = await self.portal.form(request)
            token = str(form.get("token", "")).strip()
            result = await check_connection(tenant_url, token)
        defs = await self._read(props.list_properties)
        response = self.portal.render(
            request,
            "connection.html",
            status,
            title="SCIM connection",
            tenant_url=tenant_url,
            result=result,
            urn=self.portal.scim.settings.properties_urn,
            properties=defs,
            apps_url=APPS,
        )
        response.headers["Cache-Control"] = "no-store"
        return response


def group_row(res: dict[str, Any]) -> dict[str, Any]:
    """What the groups list shows of one group."""
    return {
        "id": res["id"],
        "displayName": res.get("displayName", ""),
        "externalId": res.get("externalId"),
        "modified": res.get("meta", {}).get("lastModified", ""),
    }


def _core_attributes(res: dict[str, Any], listed_apart: str) -> list[tuple[str, Any]]:
    """A resource's own attributes for display (not server-owned, extension or membership)."""
    skip = ("schemas", "id", "meta", listed_apart)
    return [
        (k, view(v)) for k, v in res.items() if k not in skip and not k.lower().startswith("urn:")
    ]
