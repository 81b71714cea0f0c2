"""Work portal directory pages: users, groups, custom properties, audit log, SCIM connection."""

from __future__ import annotations

import asyncio
import html
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from scimd.auth import admins, apps
from scimd.scim.filter import parse
from scimd.scim.schema import ENTERPRISE_SCHEMA, USER_PROPERTIES_SCHEMA
from scimd.settings import Settings
from scimd.store import audit, migrate
from scimd.store.engine import create_engine
from scimd.store.tables import user_properties
from scimd.web.app import create_app
from scimd.web.portal_pages import check_connection, user_search_filter
from support.live_server import free_port, sqlite_url, start_server

PASSWORD = "long enough pw"
APP_NAME = "Microsoft Entra ID"
PROPS = USER_PROPERTIES_SCHEMA
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
PAGES = [
    "/admin/users",
    "/admin/groups",
    "/admin/properties",
    "/admin/audit",
    "/admin/connection",
]


@dataclass
class Env:
    client: TestClient
    engine: sa.Engine
    token: str
    client_id: str

    def scim(self, method: str, path: str, body: Any = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return self.client.request(method, f"/scim/v2{path}", json=body, headers=headers)

    def user(self, user_name: str, **attrs: Any) -> str:
        r = self.scim("POST", "/Users", {"userName": user_name, **attrs})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def group(self, name: str, member_ids: list[str] | None = None) -> str:
        body = {"displayName": name, "members": [{"value": m} for m in member_ids or []]}
        r = self.scim("POST", "/Groups", body)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def csrf(self, path: str = "/admin/connection") -> str:
        m = CSRF.search(self.client.get(path).text)
        assert m, "no CSRF token on the page"
        return html.unescape(m.group(1))

    def post(self, path: str, data: dict[str, str]) -> httpx.Response:
        return self.client.post(path, data={"csrf": self.csrf(), **data}, follow_redirects=False)


def _prepare(engine: sa.Engine) -> tuple[str, str]:
    """Create the admin and an Entra-style bearer application; return its client id and secret."""
    with engine.begin() as conn:
        admins.create(conn, "admin", PASSWORD, audit.CLI)
        app, secret = apps.create_app(conn, APP_NAME, "bearer", ["API", "USER SYNC"], audit.CLI)
    return str(app["client_id"]), secret


def _sign_in(client: TestClient | httpx.Client) -> None:
    m = CSRF.search(client.get("/admin/login").text)
    assert m
    r = client.post(
        "/admin/login",
        data={"username": "admin", "password": PASSWORD, "csrf": html.unescape(m.group(1))},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def anon(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    """The app on a fresh database, with an admin and an application, not signed in.

    SQLite always; PostgreSQL too when ``SCIMD_TEST_POSTGRES_URL`` is set (CI sets it).
    """
    if request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path}/p.db")
    else:
        engine = create_engine(str(request.getfixturevalue("postgres_url")))
    app = create_app(Settings(), engine)
    client_id, secret = _prepare(engine)
    with TestClient(app) as client:
        yield Env(client, engine, secret, client_id)


@pytest.fixture
def env(anon: Env) -> Env:
    """The same app with the admin signed in."""
    _sign_in(anon.client)
    return anon


def _text(r: httpx.Response) -> str:
    """The page's text without tags, whitespace collapsed and en dashes as hyphens."""
    text = html.unescape(re.sub(r"<[^>]+>", " ", r.text)).replace("\N{EN DASH}", "-")
    return " ".join(text.split())


def _property_names(env: Env) -> set[str]:
    with env.engine.connect() as conn:
        return {str(n) for (n,) in conn.execute(sa.select(user_properties.c.name))}


# ---------------------------------------------------------------------------------------------
# Access


@pytest.mark.parametrize("path", [*PAGES, "/admin/users/x", "/admin/groups/x"])
def test_signed_out_get_redirects_to_login(anon: Env, path: str) -> None:
    """Every directory page sends a signed-out visitor to the sign-in page (303)."""
    r = anon.client.get(path, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/admin/login")


@pytest.mark.parametrize("path", ["/admin/properties", "/admin/connection"])
def test_signed_out_post_redirects_to_login(anon: Env, path: str) -> None:
    """Forms posted without a session are redirected to sign-in and change nothing."""
    r = anon.client.post(path, data={"name": "Badge", "type": "String"}, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/admin/login")
    assert _property_names(anon) == set()


@pytest.mark.parametrize("path", PAGES)
def test_page_renders_for_signed_in_admin(env: Env, path: str) -> None:
    """Each page renders (200) with its navigation entry marked as the current page."""
    r = env.client.get(path)
    assert r.status_code == 200, r.text
    assert f'href="{path}" aria-current="page"' in r.text
    assert "<h1>" in r.text
    assert r.headers["content-security-policy"].startswith("default-src 'self'")


# ---------------------------------------------------------------------------------------------
# Users


def test_user_search_filter_is_built_as_a_tree() -> None:
    """The search box's text is a literal in a filter tree: quotes cannot change its meaning."""
    flt = user_search_filter('x" or userName pr or "')
    text = str(flt)
    assert text.startswith('userName co "x\\" or userName pr or \\"" or name.formatted co')
    assert "emails.value co" in text
    assert parse(text) == flt


@pytest.mark.parametrize(
    ("query", "expected"),
    [("jdoe", "jdoe@corp.example"), ("mail.example", "jdoe@corp.example"), ("Wanda", "wm")],
)
def test_user_search_matches_username_email_and_name(env: Env, query: str, expected: str) -> None:
    """The search box finds users by userName, email or name (case-insensitively)."""
    env.user("jdoe@corp.example", emails=[{"value": "john@mail.example", "type": "work"}])
    env.user("wm", name={"givenName": "wanda", "familyName": "Maximoff"})
    env.user("other@corp.example", displayName="Someone Else")
    r = env.client.get("/admin/users", params={"q": query})
    assert r.status_code == 200
    assert expected in r.text
    assert "other@corp.example" not in r.text
    assert "Users 1-1 of 1" in _text(r)


def test_users_list_columns(env: Env) -> None:
    """The list shows userName (linked), name, work email, status and last modified."""
    uid = env.user(
        "ada@corp.example",
        name={"formatted": "Ada Lovelace"},
        emails=[{"value": "ada@home.example", "type": "home"}, {"value": "ada@work.example"}],
        active=False,
    )
    env.user(
        "bob@corp.example",
        displayName="Bob",
        emails=[
            {"value": "bob@home.example", "type": "home"},
            {"value": "bob@work.example", "type": "work"},
        ],
        active=True,
    )
    r = env.client.get("/admin/users")
    assert f'href="/admin/users/{uid}"><bdi>ada@corp.example</bdi></a>' in r.text
    text = _text(r)
    modified = r"\d{4}-\d\d-\d\d \d\d:\d\d"
    assert re.search(
        r"ada@corp\.example Ada Lovelace ada@home\.example \(home\) disabled " + modified, text
    )
    assert "bob@corp.example Bob bob@work.example active" in text
    assert "bob@home.example" not in text


def test_search_text_with_quotes_is_not_a_filter(env: Env) -> None:
    """Filter syntax typed into the search box is searched for literally."""
    env.user("plain@corp.example")
    r = env.client.get("/admin/users", params={"q": '" or userName pr or "'})
    assert r.status_code == 200
    assert "plain@corp.example" not in r.text
    assert "No users match" in r.text


@pytest.mark.parametrize(
    ("query", "found", "missed"),
    [
        ("50%", "half", "five"),  # LIKE wildcards are literal
        ('o"brien', "quote", "plain"),  # a quote (escaped in the JSON text)
        ("kelvin", "kelvin", "plain"),  # U+212A KELVIN SIGN lower-cases to "k"
        ("zoë", "accent", "plain"),  # non-ASCII text
    ],
)
def test_search_finds_values_with_special_characters(
    env: Env, query: str, found: str, missed: str
) -> None:
    """The search's fast pre-check of the JSON text never hides a real match."""
    env.user("half", displayName="50% off")
    env.user("five", displayName="500 off")
    env.user("quote", displayName='Pat O"Brien')
    env.user("kelvin", name={"familyName": "\u212aELVIN"})
    env.user("accent", name={"formatted": "ZOË Smith"})
    env.user("plain", displayName="Plain user")
    r = env.client.get("/admin/users", params={"q": query})
    assert f"><bdi>{found}</bdi></a>" in r.text
    assert f">{missed}</a>" not in r.text


def test_advanced_filter_narrows(env: Env) -> None:
    """The advanced SCIM filter box applies a full SCIM filter."""
    env.user("on@corp.example", active=True)
    env.user("off@corp.example", active=False)
    r = env.client.get("/admin/users", params={"filter": "active eq false"})
    assert r.status_code == 200
    assert "off@corp.example" in r.text and "on@corp.example" not in r.text


@pytest.mark.parametrize(
    ("flt", "detail"),
    [
        ("userName eq", "expected a value but the filter ended"),
        ("shoeSize gt 3", "unknown attribute 'shoeSize'"),
    ],
)
def test_advanced_filter_error_is_400_with_detail(env: Env, flt: str, detail: str) -> None:
    """An invalid advanced filter renders the users page with 400 and the parser's detail."""
    r = env.client.get("/admin/users", params={"filter": flt})
    assert r.status_code == 400
    assert detail in html.unescape(r.text)
    assert f'id="filter" name="filter" type="text" class="wide mono" value="{flt}"' in r.text


def test_users_paging_sorted_by_username(env: Env) -> None:
    """Unfiltered pages hold 50 users in userName order, with the total and startIndex links."""
    for i in reversed(range(120)):
        env.user(f"user{i:03d}@corp.example")
    first = env.client.get("/admin/users")
    names = re.findall(r">(user\d{3})@corp\.example</bdi></a>", first.text)
    assert names == [f"user{i:03d}" for i in range(50)]
    assert "Users 1-50 of 120" in _text(first)
    assert 'href="/admin/users?startIndex=51"' in first.text
    last = env.client.get("/admin/users", params={"startIndex": "101"})
    names = re.findall(r">(user\d{3})@corp\.example</bdi></a>", last.text)
    assert names == [f"user{i:03d}" for i in range(100, 120)]
    assert "startIndex=151" not in last.text
    assert 'href="/admin/users?startIndex=51"' in last.text  # previous
    desc = env.client.get("/admin/users", params={"sortBy": "userName", "sortOrder": "descending"})
    assert re.findall(r">(user\d{3})@", desc.text)[0] == "user119"


def test_filtered_paging_has_no_total_and_uses_the_extra_row(env: Env) -> None:
    """Search pages say "page N" and offer a next link only while more matches exist."""
    for i in range(55):
        env.user(f"match{i:02d}@corp.example")
    env.user("zzz@corp.example")
    one = env.client.get("/admin/users", params={"q": "match"})
    assert "Page 1 (users 1-50)" in _text(one)
    assert " of " not in _text(one).split("Page 1")[1][:30]
    assert "startIndex=51" in one.text
    two = env.client.get("/admin/users", params={"q": "match", "startIndex": "51"})
    assert len(re.findall(r">match\d{2}@corp\.example</bdi></a>", two.text)) == 5
    assert "Page 2 (users 51-55)" in _text(two)
    assert "startIndex=101" not in two.text


def test_user_page_shows_all_attributes_groups_and_history(env: Env) -> None:
    """A user's page shows core, enterprise and custom values, groups and who changed what."""
    r = env.post("/admin/properties", {"name": "Badge", "type": "Integer", "description": ""})
    assert r.status_code == 303
    uid = env.user(
        "grace@corp.example",
        name={"givenName": "Grace", "familyName": "Hopper"},
        emails=[{"value": "grace@corp.example", "type": "work", "primary": True}],
        phoneNumbers=[{"value": "+1 555 0100", "type": "mobile"}],
        **{ENTERPRISE_SCHEMA: {"department": "Navy"}, PROPS: {"Badge": 1906}},
    )
    gid = env.group("Compilers", [uid])
    patch = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "title", "value": "Rear Admiral"}],
    }
    assert env.scim("PATCH", f"/Users/{uid}", patch).status_code == 200
    r = env.client.get(f"/admin/users/{uid}")
    assert r.status_code == 200
    text = _text(r)
    for expected in ("Grace", "Hopper", "Rear Admiral", "Navy", "Badge (Integer) 1906"):
        assert expected in text
    assert '<th scope="col">value</th><th scope="col">type</th>' in r.text  # emails table
    assert "+1 555 0100" in text
    assert f'href="/admin/groups/{gid}">Compilers</a>' in r.text
    history = text.split("History", 1)[1]
    assert history.index("patch") < history.index("create")  # newest first
    assert f"application {APP_NAME}" in history
    app_link = f'<a href="/admin/security/oauth2-applications/{env.client_id}">{APP_NAME}</a>'
    assert app_link in r.text


def test_unknown_user_and_group_are_404(env: Env) -> None:
    """Unknown ids render a 404 page that links to their audit history."""
    for path in ("/admin/users/nope", "/admin/groups/nope"):
        r = env.client.get(path)
        assert r.status_code == 404
        assert "/admin/audit?resource=nope" in r.text


# ---------------------------------------------------------------------------------------------
# Groups


def test_groups_list_search_and_member_counts(env: Env) -> None:
    """Groups list with member counts; the search box matches displayName."""
    a, b = env.user("a@corp.example"), env.user("b@corp.example")
    env.group("Engineering", [a, b])
    env.group("Empty team")
    r = env.client.get("/admin/groups")
    rows = re.findall(
        r">([^<>]+)</bdi></a></td>\s*<td>[^\n]*</td>\s*<td class=\"num\">(\d+)</td>", r.text
    )
    assert rows == [("Empty team", "0"), ("Engineering", "2")]
    r = env.client.get("/admin/groups", params={"q": "GINEER"})
    assert "Engineering" in r.text and "Empty team" not in r.text


def test_group_page_pages_members(env: Env) -> None:
    """A group's members are shown 50 at a time, with the total and previous/next links."""
    ids = [env.user(f"m{i:02d}@corp.example") for i in range(60)]
    gid = env.group("Big", ids)
    one = env.client.get(f"/admin/groups/{gid}")
    assert one.status_code == 200
    assert len(re.findall(r'href="/admin/users/', one.text)) == 50
    assert "Members 1-50 of 60" in _text(one)
    assert f'href="/admin/groups/{gid}?startIndex=51"' in one.text
    two = env.client.get(f"/admin/groups/{gid}", params={"startIndex": "51"})
    assert len(re.findall(r'href="/admin/users/', two.text)) == 10
    assert "Members 51-60 of 60" in _text(two)
    shown = set(re.findall(r'href="/admin/users/([0-9a-f]+)"', one.text + two.text))
    assert shown == set(ids)
    assert "create" in _text(two).split("History", 1)[1]


# ---------------------------------------------------------------------------------------------
# Custom properties


def test_property_add_lists_entra_name_and_is_audited(env: Env) -> None:
    """Adding a property lists its type, description and full Entra name; the admin is audited."""
    r = env.post(
        "/admin/properties",
        {"name": "IdentificationNumber", "type": "String", "description": "National id"},
    )
    assert r.status_code == 303
    page = env.client.get("/admin/properties")
    text = _text(page)
    assert "Property IdentificationNumber (String) added" in text
    assert f"IdentificationNumber String National id {PROPS}:IdentificationNumber 0" in text
    log = _text(env.client.get("/admin/audit", params={"operation": "property.add"}))
    assert "admin admin property.add UserProperty IdentificationNumber" in log


def test_property_type_select_offers_basic_types_only(env: Env) -> None:
    """The type select offers exactly the six basic types, with the reason for the others."""
    r = env.client.get("/admin/properties")
    select = r.text.split('<select id="type"', 1)[1].split("</select>", 1)[0]
    options = re.findall(r'<option value="([^"]+)"', select)
    assert options == ["String", "Integer", "Decimal", "Boolean", "DateTime", "Date"]
    assert "parametric tables" in r.text and "multi-valued" in r.text


def test_property_unsupported_type_refused_with_explanation(env: Env) -> None:
    """A posted unsupported type is refused (400) with the explanation, and nothing is added."""
    r = env.post("/admin/properties", {"name": "Boss", "type": "reference"})
    assert r.status_code == 400
    assert "references to other objects are not supported" in html.unescape(r.text)
    assert 'value="Boss"' in r.text
    assert _property_names(env) == set()


def test_forms_with_a_nul_character_are_refused(anon: Env) -> None:
    """A NUL in any posted field is a 400 page saying so, on both databases (PostgreSQL cannot
    take the character at all: it used to fail the statement, a 500), and nothing changes."""
    m = CSRF.search(anon.client.get("/admin/login").text)
    assert m
    form = {"username": "ad\x00min", "password": PASSWORD, "csrf": html.unescape(m.group(1))}
    r = anon.client.post("/admin/login", data=form, follow_redirects=False)
    assert r.status_code == 400
    assert "NUL character" in _text(r)
    _sign_in(anon.client)
    for path, data in (
        ("/admin/properties", {"name": "Ba\x00dge", "type": "Integer"}),
        ("/admin/properties", {"name": "Badge", "type": "Integer", "description": "\x00"}),
        ("/admin/security/oauth2-applications/add", {"name": "A\x00", "scope": "API"}),
    ):
        r = anon.post(path, data)
        assert r.status_code == 400, (path, r.text)
        assert "NUL character" in _text(r)
    assert _property_names(anon) == set()
    with anon.engine.connect() as conn:
        assert [a["name"] for a in apps.list_apps(conn)] == [APP_NAME]


def test_property_remove_without_values_asks_first_too(env: Env) -> None:
    """A property no user holds a value for was removed at one click, and Entra's next write
    of an attribute mapped to it then failed: the removal asks first, as disabling an
    application does, and says what it breaks."""
    env.post("/admin/properties", {"name": "Unused", "type": "Boolean"})
    ask = env.post("/admin/properties/Unused/remove", {})
    assert ask.status_code == 200 and _property_names(env) == {"Unused"}
    assert "No user holds a value." in _text(ask) and "gets an error" in _text(ask)
    assert 'name="confirm" value="yes"' in ask.text
    done = env.post("/admin/properties/Unused/remove", {"confirm": "yes"})
    assert done.status_code == 303
    assert _property_names(env) == set()


def test_property_remove_with_values_requires_confirmation(env: Env) -> None:
    """Removing a property users hold values for asks first, then strips those values."""
    env.post("/admin/properties", {"name": "Badge", "type": "Integer"})
    uid = env.user("holder@corp.example", **{PROPS: {"Badge": 7}})
    env.user("nobadge@corp.example")
    ask = env.post("/admin/properties/Badge/remove", {})
    assert ask.status_code == 200
    assert "1 user holds a value; removing deletes those values." in _text(ask)
    assert 'name="confirm" value="yes"' in ask.text
    assert _property_names(env) == {"Badge"}
    assert env.scim("GET", f"/Users/{uid}").json()[PROPS] == {"Badge": 7}
    done = env.post("/admin/properties/Badge/remove", {"confirm": "yes"})
    assert done.status_code == 303
    assert _property_names(env) == set()
    assert "Badge" not in env.scim("GET", f"/Users/{uid}").json().get(PROPS, {})
    assert "1 user(s) were deleted" in _text(env.client.get("/admin/properties"))


def test_post_without_csrf_is_403_and_changes_nothing(env: Env) -> None:
    """Property add/remove and the connection test without the CSRF token are refused (403)."""
    env.post("/admin/properties", {"name": "Keep", "type": "String"})
    for path, data in (
        ("/admin/properties", {"name": "Sneaky", "type": "String"}),
        ("/admin/properties/Keep/remove", {"confirm": "yes"}),
        ("/admin/connection", {"token": env.token}),
    ):
        r = env.client.post(path, data=data, follow_redirects=False)
        assert r.status_code == 403, path
        bad = env.client.post(path, data={**data, "csrf": "forged"}, follow_redirects=False)
        assert bad.status_code == 403, path
    assert _property_names(env) == {"Keep"}


# ---------------------------------------------------------------------------------------------
# Audit log


def test_audit_filters_narrow_results(env: Env) -> None:
    """Who, actor type, operation, resource id and date filters each narrow the log."""
    uid = env.user("audited@corp.example")
    env.user("second@corp.example")
    env.post("/admin/properties", {"name": "Level", "type": "Integer"})

    def ops(**params: str) -> list[str]:
        r = env.client.get("/admin/audit", params=params)
        assert r.status_code == 200, r.text
        return re.findall(r"<td><code>([a-z_.]+)</code></td>", r.text)

    everything = ops()
    assert everything[:3] == ["property.add", "create", "create"]
    assert {"app.create", "admin.create"} <= set(everything)
    assert ops(who=APP_NAME.lower()) == ["create", "create"]
    assert ops(who="admin", type="admin") == ["property.add"]
    assert ops(type="cli") == ["app.create", "admin.create"]
    assert ops(operation="property.add") == ["property.add"]
    assert ops(resource=uid) == ["create"]
    assert ops(**{"from": "2000-01-01", "to": "2000-12-31"}) == []
    assert len(ops(**{"from": "2000-01-01"})) == len(everything)
    bad = env.client.get("/admin/audit", params={"from": "yesterday"})
    assert bad.status_code == 400 and "YYYY-MM-DD" in bad.text


def test_audit_who_finds_an_application_named_beyond_ascii(env: Env) -> None:
    """SQLite's lower() is ASCII only: "Équipe RH", as the page's own list offers it, found
    none of that application's records (PostgreSQL's did)."""
    with env.engine.begin() as conn:
        _, secret = apps.create_app(conn, "Équipe RH", "bearer", ["USER SYNC"], audit.CLI)
    r = env.client.post(
        "/scim/v2/Users",
        json={"userName": "equipe@corp.example"},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert r.status_code == 201, r.text
    for who in ("Équipe RH", "équipe rh", "ÉQUIPE RH"):
        page = env.client.get("/admin/audit", params={"who": who})
        assert re.findall(r"<td><code>([a-z_.]+)</code></td>", page.text) == ["create"], who


def test_audit_links_resources_that_exist(env: Env) -> None:
    """Audit rows link to user and group pages while those still exist."""
    kept = env.user("kept@corp.example")
    gone = env.user("gone@corp.example")
    gid = env.group("Team", [kept])
    assert env.scim("DELETE", f"/Users/{gone}").status_code == 204
    r = env.client.get("/admin/audit")
    assert f'<a href="/admin/users/{kept}">{kept}</a>' in r.text
    assert f'<a href="/admin/groups/{gid}">{gid}</a>' in r.text
    assert gone in r.text and f'href="/admin/users/{gone}"' not in r.text


def test_audit_shows_a_long_detail_whole_on_demand(env: Env) -> None:
    """A change of 40 members showed 15 of them, cut at 600 characters, and nothing in the
    portal showed the rest: the whole detail is one click away (a <details> element)."""
    ids = [env.user(f"many{i:02d}@corp.example") for i in range(40)]
    gid = env.group("Forty", ids)
    page = env.client.get("/admin/audit", params={"resource": gid}).text
    whole = re.search(r'<pre class="detail">(.*?)</pre>', page, re.S)
    assert whole is not None
    assert all(i in whole.group(1) for i in ids)
    assert page.count('<pre class="detail">') == 1  # short details are shown as they are
    assert env.client.get(f"/admin/groups/{gid}").text.count('<pre class="detail">') == 1


def test_an_application_that_is_no_more_has_a_not_found_page(env: Env) -> None:
    """A deleted application's page said "Not possible" over a lower-case error; users and
    groups had a page saying it is not found, with a link to its history."""
    r = env.client.get("/admin/security/oauth2-applications/no-such-app")
    assert r.status_code == 404
    assert "<h1>Application not found</h1>" in r.text and "Not possible" not in r.text
    assert 'href="/admin/audit?resource=no-such-app"' in r.text


def test_a_nul_in_a_portal_address_is_answered_in_words(env: Env) -> None:
    """A NUL in a portal address was answered with a SCIM error body (JSON); the SCIM API's
    own addresses keep theirs."""
    r = env.client.get("/admin/users/x%00y")
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/plain")
    assert "NUL character" in r.text
    scim = env.scim("GET", "/Users/x%00y")
    assert scim.headers["content-type"].startswith("application/scim+json")  # a SCIM error


def test_audit_pages_by_primary_key(env: Env) -> None:
    """The log pages 50 rows at a time with ?before=<pk> (older) and ?after=<pk> (newer)."""
    for i in range(60):
        env.user(f"bulk{i:02d}@corp.example")
    first = env.client.get("/admin/audit", params={"operation": "create"})
    ids = re.findall(r'href="/admin/users/([0-9a-f]+)"', first.text)
    assert len(ids) == 50
    m = re.search(r'href="(/admin/audit\?operation=create&amp;before=\d+)"', first.text)
    assert m, "no link to older entries"
    older = env.client.get(html.unescape(m.group(1)))
    older_ids = re.findall(r'href="/admin/users/([0-9a-f]+)"', older.text)
    assert len(older_ids) == 10 and not set(older_ids) & set(ids)
    assert "before=" not in older.text  # the oldest page
    m = re.search(r'href="(/admin/audit\?operation=create&amp;after=\d+)"', older.text)
    assert m, "no link to newer entries"
    newer = env.client.get(html.unescape(m.group(1)))
    assert re.findall(r'href="/admin/users/([0-9a-f]+)"', newer.text) == ids

    # Beyond PostgreSQL's 32-bit keys: a 500 there ("integer out of range").
    for bound in ("before", "after"):
        huge = env.client.get("/admin/audit", params={bound: str(2**40)})
        assert huge.status_code == 200, (bound, huge.text[:200])
    assert len(re.findall(r'href="/admin/users/([0-9a-f]+)"', huge.text)) == 0
    assert (
        len(
            re.findall(
                r'href="/admin/users/([0-9a-f]+)"',
                env.client.get(
                    "/admin/audit", params={"operation": "create", "before": str(2**40)}
                ).text,
            )
        )
        == 50
    )


def test_a_search_text_too_long_is_refused_on_the_page(env: Env) -> None:
    """Past ~50,000 characters SQLite refused the LIKE pattern: a 503 logged as an outage
    (the search boxes build their filter without the parser's length bound)."""
    env.user("long@corp.example")
    env.group("Long")
    for path in ("/admin/users", "/admin/groups"):
        r = env.client.get(path, params={"q": "x" * 50_010})
        assert r.status_code == 400 and "longer than 256 characters" in r.text, path
        assert "long@corp.example" not in r.text
    r = env.client.get("/admin/users", params={"q": "long@corp"})
    assert "long@corp.example" in r.text


# ---------------------------------------------------------------------------------------------
# SCIM connection


def test_connection_page_shows_tenant_url_and_steps(env: Env) -> None:
    """The page shows the Tenant URL with a copy button and the Entra set-up steps in order."""
    env.post("/admin/properties", {"name": "IdentificationNumber", "type": "String"})
    r = env.client.get("/admin/connection")
    assert 'id="tenant_url" type="text" readonly value="http://testserver/scim/v2/"' in r.text
    assert 'class="secondary copy" data-copy="tenant_url"' in r.text
    assert 'type="password"' in r.text
    text = _text(r)
    steps = [
        "OAuth 2 Applications",
        "Bearer token",
        "USER SYNC",
        "token lifetime to 0",
        "Provisioning Mode to Automatic",
        "Tenant URL",
        "Test Connection",
        f"{PROPS}:IdentificationNumber",
        "Scope",
        "Notification Email",
        "Provisioning Status to On",
    ]
    positions = [text.index(s, text.index("Set up provisioning")) for s in steps]
    assert positions == sorted(positions)
    assert r.headers["cache-control"] == "no-store"


def _mock(status: int, body: Any) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/scim/v2/Users"
        assert request.url.params["filter"].startswith('userName eq "')
        assert request.headers["authorization"] == "Bearer tok"
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("status", "body", "ok", "headline"),
    [
        (200, {"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
               "totalResults": 0, "Resources": []}, True, "Connection test passed"),
        (200, {"hello": "world"}, False, "Unexpected answer"),
        (401, {"detail": "no"}, False, "The Secret Token was refused"),
        (403, {"detail": "scope"}, False, "The token lacks the USER SYNC scope"),
        (500, {"detail": "boom"}, False, "The server answered 500"),
    ],
)  # fmt: skip
def test_check_connection_explains_each_answer(
    status: int, body: Any, ok: bool, headline: str
) -> None:
    """Each answer to the probe gets a pass/fail verdict and a human explanation."""
    result = asyncio.run(
        check_connection("http://x.test/scim/v2/", "tok", transport=_mock(status, body))
    )
    assert (result.ok, result.headline, result.status) == (ok, headline, status)
    assert "tok" not in result.request
    if not ok and status != 200:
        assert result.body


def test_check_connection_rejects_malformed_token_without_sending() -> None:
    """A token with spaces or control characters is refused before any request is sent."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing should be sent")

    result = asyncio.run(
        check_connection("http://x.test/scim/v2/", "a b\n", transport=httpx.MockTransport(handler))
    )
    assert not result.ok and result.headline == "Not a token"


def test_connection_test_against_live_server(tmp_path: Path) -> None:
    """Over real HTTP, the portal's test passes with a valid token and explains a bad one (401)."""
    # ``scimd serve`` runs in a subprocess: the portal request calls the server's own Tenant
    # URL, which needs a listening socket; it also shows the event loop (which runs the SQLite
    # calls) keeps serving the SCIM request while the portal request waits for it.
    url = sqlite_url(tmp_path / "live.db")
    engine = create_engine(url)
    migrate.ensure_current(engine)
    _client_id, secret = _prepare(engine)
    engine.dispose()
    with (
        start_server(url, log_dir=tmp_path) as server,
        httpx.Client(base_url=server.root_url, timeout=15) as client,
    ):
        _sign_in(client)

        def run(token: str) -> httpx.Response:
            m = CSRF.search(client.get("/admin/connection").text)
            assert m
            data = {"token": token, "csrf": html.unescape(m.group(1))}
            return client.post("/admin/connection", data=data)

        good = run(secret)
        assert good.status_code == 200
        assert "Connection test passed" in good.text and "(HTTP 200)" in good.text
        assert secret not in good.text
        bad = run("wrong-" + secret[:10])
        assert "The Secret Token was refused" in bad.text and "(HTTP 401)" in bad.text
        assert secret[:10] not in bad.text


_portal_text = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=16),
    st.sampled_from(
        [
            "",
            "0",
            "-1",
            "99999999999999999999999",
            "2026-13-45",
            "userName eq",
            '"',
            "%",
            "_",
            "é" * 600,
            "x" * 3000,
            "\x00",
            "String",
            "Integer",
            "bearer",
            "client_credentials",
        ]
    ),
)
_PAGES = [
    "/admin/users",
    "/admin/groups",
    "/admin/audit",
    "/admin/properties",
    "/admin/connection",
    "/admin/security/oauth2-applications",
]
_PARAMS = [
    "q",
    "filter",
    "startIndex",
    "sortBy",
    "sortOrder",
    "who",
    "type",
    "resource",
    "operation",
    "from",
    "to",
    "count",
]


@settings(
    max_examples=int(os.environ.get("SCIMD_FUZZ_EXAMPLES", "0")) or 60,
    deadline=None,
    derandomize="SCIMD_FUZZ_EXAMPLES" not in os.environ,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_portal_requests_never_fail_the_server(env: Env, data: st.DataObject) -> None:
    """Signed-in requests with random query strings, ids and form fields: a page, a redirect
    or a 4xx page, never a 5xx (the same property the SCIM API has in test_http_fuzz)."""
    which = data.draw(st.integers(0, 5))
    if which <= 1:
        path = data.draw(st.sampled_from(_PAGES))
        if which == 1:
            kind = data.draw(st.sampled_from(["users", "groups", "security/oauth2-applications"]))
            path = f"/admin/{kind}/{quote(data.draw(_portal_text), safe='')}"
        params = data.draw(st.dictionaries(st.sampled_from(_PARAMS), _portal_text, max_size=4))
        r = env.client.get(path, params=params, follow_redirects=False)
    else:
        path = data.draw(
            st.sampled_from(
                [
                    "/admin/properties",
                    "/admin/security/oauth2-applications/add",
                    "/admin/connection",
                    f"/admin/security/oauth2-applications/{env.client_id}/rotate",
                    f"/admin/security/oauth2-applications/{env.client_id}/nonsense",
                    "/admin/security/oauth2-applications/no-such-app/disable",
                    "/admin/properties/NoSuch/remove",
                ]
            )
        )
        form = data.draw(
            st.dictionaries(
                st.sampled_from(
                    ["name", "type", "description", "grant", "scope", "lifetime", "confirm"]
                ),
                _portal_text,
                max_size=5,
            )
        )
        r = env.post(path, form)
    assert r.status_code < 500, (path, r.status_code, r.text[:300])


def test_disabling_or_revoking_the_last_secret_asks_first(env: Env) -> None:
    """Disable and revoking an application's last active secret took one click and broke an
    Entra connection silently; the application still read "enabled". Both now need the box
    ticked (refused without it, whatever the browser did), and an application left without a
    secret says so."""
    base = f"/admin/security/oauth2-applications/{env.client_id}"
    assert env.post(f"{base}/disable", {}).status_code == 303
    assert env.scim("GET", "/Users").status_code == 200  # not disabled
    assert "Tick" in env.client.get(base).text
    with env.engine.connect() as conn:
        (only,) = [s["id"] for s in apps.get_app(conn, env.client_id)["secrets"]]
    env.post(f"{base}/secrets/{only}/revoke", {})
    assert env.scim("GET", "/Users").status_code == 200  # not revoked
    assert "last active secret" in env.client.get(base).text
    env.post(f"{base}/secrets/{only}/revoke", {"confirm": "yes"})
    assert env.scim("GET", "/Users").status_code == 401
    listed = env.client.get("/admin/security/oauth2-applications").text
    assert "no active secret" in listed


def test_portal_errors_are_portal_pages(env: Env) -> None:
    """/admin/nosuch and GET /admin/logout were bare "Not Found" / "Method Not Allowed"
    text, without the portal's header, links or security headers."""
    missing = env.client.get("/admin/nosuch")
    assert missing.status_code == 404 and "no such page in the work portal" in missing.text
    assert missing.headers["x-frame-options"] == "DENY" and "Portal home" in missing.text
    wrong = env.client.get("/admin/logout")
    assert wrong.status_code == 405 and "does not take a GET request" in wrong.text
    assert wrong.headers["allow"] == "POST"


def test_portal_pages_survive_their_connections_ending(postgres_url: str) -> None:
    """After PostgreSQL restarted, each portal thread answered one page with a 503 and a
    logged traceback: its connection was dead. The call runs once more on a new one."""
    engine = create_engine(postgres_url)
    app = create_app(Settings(), engine)
    _prepare(engine)
    killer = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with TestClient(app) as client:
            _sign_in(client)
            for _ in range(4):  # both portal threads hold a connection
                assert client.get("/admin/users").status_code == 200
            with killer.connect() as conn:
                ended = conn.execute(
                    sa.text(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
                        " FROM pg_stat_activity WHERE datname = current_database()"
                        " AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
            assert ended
            assert [client.get("/admin/users").status_code for _ in range(4)] == [200] * 4
    finally:
        killer.dispose()
        engine.dispose()


def test_paging_links_keep_a_descending_sort(env: Env) -> None:
    """The next and previous links of a sorted list carry the sort: page 2 of a descending
    list must continue it, not start the ascending list over at its 51st user."""
    for i in range(60):
        env.user(f"user{i:03d}@corp.example")
    params = {"sortBy": "userName", "sortOrder": "descending"}
    first = env.client.get("/admin/users", params=params)
    link = re.search(r'href="(/admin/users\?[^"]*startIndex=51[^"]*)"', first.text)
    assert link, first.text
    second = env.client.get(html.unescape(link.group(1)))
    names = re.findall(r">(user\d{3})@corp\.example</bdi></a>", second.text)
    assert names == [f"user{i:03d}" for i in reversed(range(10))]


def test_the_users_list_prefers_a_work_email_however_typed_then_the_primary(env: Env) -> None:
    """The email column shows the work address (its type in any case, as Entra sends
    "Work"), else the primary one, else the first: not a home address listed first."""
    env.user(
        "cased@corp.example",
        emails=[
            {"value": "cased@home.example", "type": "home"},
            {"value": "cased@work.example", "type": "Work"},
        ],
    )
    env.user(
        "primary@corp.example",
        emails=[
            {"value": "primary@home.example", "type": "home"},
            {"value": "primary@main.example", "type": "other", "primary": True},
        ],
    )
    text = _text(env.client.get("/admin/users"))
    assert "cased@work.example" in text and "cased@home.example" not in text
    assert "primary@main.example" in text and "primary@home.example" not in text


def test_the_users_list_names_a_user_known_only_by_given_and_family_name(env: Env) -> None:
    """Entra often sends only name.givenName and name.familyName: the name column joins
    them rather than leaving the user nameless."""
    env.user("gf@corp.example", name={"givenName": "Grace", "familyName": "Hopper"})
    assert "gf@corp.example Grace Hopper" in _text(env.client.get("/admin/users"))


def test_the_user_search_ignores_spaces_around_the_text(env: Env) -> None:
    """A search pasted with a trailing space or newline finds what the bare text finds."""
    env.user("spaced@corp.example")
    env.user("other@corp.example")
    r = env.client.get("/admin/users", params={"q": "  spaced@corp \n"})
    assert r.status_code == 200
    assert "><bdi>spaced@corp.example</bdi></a>" in r.text
    assert "other@corp.example" not in r.text


def test_a_search_of_exactly_the_maximum_length_is_taken(env: Env) -> None:
    """256 characters is the documented maximum of the search box: it is searched, not
    refused (257 is refused)."""
    assert env.client.get("/admin/users", params={"q": "x" * 256}).status_code == 200
    assert env.client.get("/admin/users", params={"q": "x" * 257}).status_code == 400


def test_audit_dates_include_the_to_day_and_explain_a_one_day_inversion(env: Env) -> None:
    """'to' is inclusive: from=to=today lists today's records. 'from' one day after 'to' is
    explained, not answered with an empty list."""
    with env.engine.connect() as conn:
        (newest,) = audit.history(conn, limit=1)
    day = str(newest["at"])[:10]  # the day the log files it under
    r = env.client.get("/admin/audit", params={"from": day, "to": day})
    assert r.status_code == 200 and f"<code>{newest['operation']}</code>" in r.text
    inverted = env.client.get(
        "/admin/audit",
        params={"from": "2026-01-02", "to": "2026-01-01"},
    )
    assert inverted.status_code == 400 and "after the" in inverted.text


def test_a_pasted_secret_with_a_trailing_newline_is_tested(tmp_path: Path) -> None:
    """A secret copied with a trailing newline or space is still a token: the page strips
    it before the check instead of calling it "Not a token"."""
    engine = create_engine(f"sqlite:///{tmp_path}/p.db")
    # A local port nothing listens on: the check fails to connect at once, without DNS.
    app = create_app(Settings(public_url=f"http://127.0.0.1:{free_port()}"), engine)
    _, secret = _prepare(engine)
    with TestClient(app) as client:
        _sign_in(client)
        csrf = CSRF.search(client.get("/admin/connection").text)
        assert csrf
        r = client.post(
            "/admin/connection",
            data={"csrf": html.unescape(csrf.group(1)), "token": f" {secret}\n"},
        )
    assert r.status_code == 200
    assert "Not a token" not in r.text
    assert "could not be reached" in r.text


def test_check_connection_fails_a_probe_that_found_users() -> None:
    """Entra's probe asks for a random userName: a list with users in it means the server
    ignored the filter, which breaks matching, so the test must not pass."""
    body = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": 1,
        "Resources": [{"id": "1", "userName": "someone"}],
    }
    result = asyncio.run(
        check_connection("http://x.test/scim/v2/", "tok", transport=_mock(200, body))
    )
    assert (result.ok, result.headline) == (False, "Unexpected answer")


def test_audit_links_no_deleted_group_or_application(env: Env) -> None:
    """A link from the audit log to a deleted group, or to the deleted application that made
    a change, leads to a "not found" page: only what still exists is linked."""
    gid = env.group("Gone team")
    uid = env.user("made@corp.example")  # made by the application
    assert env.scim("DELETE", f"/Groups/{gid}").status_code == 204
    with env.engine.begin() as conn:
        apps.delete_app(conn, env.client_id, audit.CLI)
    r = env.client.get("/admin/audit")
    assert r.status_code == 200 and gid in r.text and uid in r.text
    assert f'href="/admin/groups/{gid}"' not in r.text
    assert f'href="/admin/security/oauth2-applications/{env.client_id}"' not in r.text


def test_a_property_is_removed_whatever_the_case_of_its_name_in_the_address(env: Env) -> None:
    """Property names are case-insensitive (as SCIM attribute names are): the remove address
    with another case finds the property instead of saying it is not defined."""
    env.post("/admin/properties", {"name": "Badge", "type": "Integer"})
    done = env.post("/admin/properties/badge/remove", {"confirm": "yes"})
    assert done.status_code == 303
    assert _property_names(env) == set()


def test_a_groups_second_member_page_links_back_to_the_first(env: Env) -> None:
    """Member pages after the first link back, so an admin paging a large group is never
    left at a dead end."""
    gid = env.group("Big", [env.user(f"m{i:02d}@corp.example") for i in range(55)])
    two = env.client.get(f"/admin/groups/{gid}", params={"startIndex": "51"})
    assert f'href="/admin/groups/{gid}?startIndex=1"' in two.text


def test_an_older_audit_page_links_back_to_the_newest_with_its_filters(env: Env) -> None:
    """From an older page of a filtered log, one link returns to the newest entries of the
    same filter (the newer link moves back one page only)."""
    for i in range(55):
        env.user(f"bulk{i:02d}@corp.example")
    first = env.client.get("/admin/audit", params={"operation": "create"})
    m = re.search(r'href="(/admin/audit\?operation=create&amp;before=\d+)"', first.text)
    assert m
    older = env.client.get(html.unescape(m.group(1)))
    assert 'href="/admin/audit?operation=create"' in older.text
    assert 'href="/admin/audit?operation=create"' not in first.text


def test_a_start_index_below_one_shows_the_first_page(env: Env) -> None:
    """startIndex is 1-based (RFC 7644 §3.4.2.4): 0 or a negative value, typed or from an
    old link, shows the first page, numbered from 1."""
    env.user("only@corp.example")
    for start in ("0", "-5"):
        r = env.client.get("/admin/users", params={"startIndex": start})
        assert r.status_code == 200, start
        assert "Users 1-1 of 1" in _text(r), start
        assert "><bdi>only@corp.example</bdi></a>" in r.text


def test_group_search_and_property_names_ignore_spaces_around_them(env: Env) -> None:
    """Text pasted with a space around it: the group search finds the group, and a new
    property gets the bare name (the name Entra's mapping uses), not a refusal."""
    env.group("Engineering")
    assert "Engineering" in env.client.get("/admin/groups", params={"q": " gineer "}).text
    assert env.post("/admin/properties", {"name": " Badge ", "type": "Integer"}).status_code == 303
    assert _property_names(env) == {"Badge"}


def test_a_huge_start_index_is_an_empty_page_not_an_error(env: Env) -> None:
    """startIndex beyond a database integer (an edited link) shows an empty page rather
    than failing the request with a 500."""
    env.user("only@corp.example")
    for path in ("/admin/users", "/admin/groups"):
        r = env.client.get(path, params={"startIndex": str(2**70)})
        assert r.status_code == 200, (path, r.text[:200])
        assert "only@corp.example" not in r.text
