"""Work portal sign-in, sessions, CSRF and the OAuth 2 Applications pages (in process)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from scimd.auth import admins, apps
from scimd.settings import Settings
from scimd.store import audit
from scimd.store.engine import create_engine
from scimd.store.tables import applications
from scimd.store.tables import audit as audit_table
from scimd.web.app import create_app
from scimd.web.portal import LoginThrottle

PASSWORD = "correct horse battery"
APPS = "/admin/security/oauth2-applications"


class Portal:
    def __init__(self, client: TestClient, engine: sa.Engine) -> None:
        self.client = client
        self.engine = engine

    def csrf(self, path: str) -> str:
        html = self.client.get(path).text
        m = re.search(r'name="csrf" value="([^"]+)"', html)
        assert m, html[:500]
        return m.group(1)

    def login(self, username: str = "admin", password: str = PASSWORD) -> Any:
        token = self.csrf("/admin/login")
        return self.client.post(
            "/admin/login",
            data={"username": username, "password": password, "csrf": token, "next": "/admin/"},
            follow_redirects=False,
        )

    def post(self, path: str, data: dict[str, Any], from_page: str) -> Any:
        return self.client.post(
            path, data={**data, "csrf": self.csrf(from_page)}, follow_redirects=False
        )


@pytest.fixture
def portal(tmp_path: Path) -> Iterator[Portal]:
    engine = create_engine(f"sqlite:///{tmp_path / 'portal.db'}")
    app = create_app(Settings(), engine)
    with engine.begin() as conn:
        admins.create(conn, "admin", PASSWORD, audit.CLI)
    with TestClient(app) as client:
        yield Portal(client, engine)


def test_pages_need_sign_in(portal: Portal) -> None:
    """Signed out, portal pages redirect to the sign-in page with the wanted path."""
    r = portal.client.get(APPS, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/admin/login?next={APPS}"


def test_sign_in_sets_secure_session_cookie(portal: Portal) -> None:
    """A good sign-in redirects and sets an HttpOnly, SameSite session cookie."""
    r = portal.login()
    assert r.status_code == 303 and r.headers["location"] == "/admin/"
    cookie = r.headers["set-cookie"].lower()
    assert "scimd_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    assert portal.client.get(APPS, follow_redirects=False).status_code == 200


def test_wrong_password_and_throttling(portal: Portal) -> None:
    """Wrong passwords are 401; after five per account, even the right one is refused (429)."""
    for _ in range(5):
        r = portal.login(password="wrong password!")
        assert r.status_code == 401 and "Wrong username or password" in r.text
    r = portal.login()
    assert r.status_code == 429 and "Too many failed sign-ins" in r.text


def test_failures_from_one_address_do_not_lock_the_admin_out_elsewhere(tmp_path: Path) -> None:
    """The per-account limit was keyed on the account alone: five wrong passwords from any
    address every 15 minutes kept the admin out. It now counts per account and address; the
    admin signs in from another address, and the guessing address stays refused."""
    engine = create_engine(f"sqlite:///{tmp_path / 'portal.db'}")
    app = create_app(Settings(), engine)
    with engine.begin() as conn:
        admins.create(conn, "admin", PASSWORD, audit.CLI)
    with (
        TestClient(app, client=("192.0.2.1", 1000)) as guesser,
        TestClient(app, client=("192.0.2.2", 1000)) as owner,
    ):
        attacker, admin = Portal(guesser, engine), Portal(owner, engine)
        for _ in range(5):
            assert attacker.login(password="wrong password!").status_code == 401
        assert attacker.login().status_code == 429
        assert admin.login().status_code == 303


def test_guesses_from_many_addresses_do_not_lock_the_admin_out_of_a_known_browser(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The per-account limit from anywhere (100 guesses in 15 minutes) refused the right
    password too: from 20 addresses, anyone could keep an admin out. A browser that signed in
    to the account before (its signed device cookie) is not stopped by that limit; other
    browsers are. Sign-ins, failures and refusals are logged with the client address."""
    caplog.set_level(logging.INFO, logger="scimd.portal")
    engine = create_engine(f"sqlite:///{tmp_path / 'portal.db'}")
    app = create_app(Settings(), engine)
    with engine.begin() as conn:
        admins.create(conn, "admin", PASSWORD, audit.CLI)
    app.state.portal.throttle = LoginThrottle(per_account=5, per_address=20, per_account_anywhere=6)
    with (
        TestClient(app, client=("192.0.2.2", 1000)) as owner_client,
        TestClient(app, client=("192.0.2.3", 1000)) as stranger_client,
    ):
        owner, stranger = Portal(owner_client, engine), Portal(stranger_client, engine)
        first = owner.login()
        assert first.status_code == 303
        assert "scimd_device=" in first.headers["set-cookie"]
        owner.post("/admin/logout", {}, "/admin/")
        for i in range(6):  # (not entered: leaving would run the app's shutdown)
            guesser = Portal(TestClient(app, client=(f"203.0.113.{i}", 1000)), engine)
            assert guesser.login(password="wrong password!").status_code == 401
        assert stranger.login().status_code == 429  # the account is locked for others
        assert owner.login().status_code == 303  # not for the browser it signed in from
        forged = stranger_client.cookies
        forged.set("scimd_device", "admin.forged.cookie", path="/admin")
        assert stranger.login().status_code == 429
        device = owner_client.cookies.get("scimd_device")
        assert device
        # The cookie's own failures are limited (5 here) wherever they come from: a copy
        # of it buys no more guesses than one address.
        for i in range(6):
            thief = TestClient(app, client=(f"198.51.100.{i}", 1000))
            thief.cookies.set("scimd_device", device, path="/admin")
            status = Portal(thief, engine).login(password="wrong password!").status_code
            assert status == (401 if i < 5 else 429), i
        # A password reset makes the cookie worthless: the locked account refuses it again.
        owner.post("/admin/logout", {}, "/admin/")
        app.state.portal.throttle = LoginThrottle(
            per_account=5, per_address=20, per_account_anywhere=6
        )
        assert owner.login().status_code == 303  # a fresh cookie
        owner.post("/admin/logout", {}, "/admin/")
        with engine.begin() as conn:
            admins.reset_password(conn, "admin", "another good password", audit.CLI)
        for i in range(6):
            guesser = Portal(TestClient(app, client=(f"203.0.113.{i}", 1000)), engine)
            assert guesser.login(password="wrong password!").status_code == 401
        assert owner.login(password="another good password").status_code == 429
    events = [
        (r.getMessage(), r.fields["client"], r.fields["known_device"])
        for r in caplog.records
        if r.name == "scimd.portal"
    ]
    assert events[0] == ("portal sign-in", "192.0.2.2", False)
    assert events.count(("portal sign-in", "192.0.2.2", True)) == 2
    assert ("portal sign-in failed", "203.0.113.5", False) in events
    assert ("portal sign-in refused: too many failures", "192.0.2.3", False) in events


def test_the_throttle_counts_an_attempt_when_it_starts() -> None:
    """Counted only after the ~0.2 s password check, 60 guesses sent together were all
    checked against a limit of 5 (59 wrong ones, then the right one signed in)."""
    throttle = LoginThrottle(per_account=5, per_address=20, per_account_anywhere=8)
    started = [throttle.attempt("Admin", "192.0.2.1") for _ in range(7)]  # none finished yet
    assert [wait == 0 for wait, _ in started] == [True] * 5 + [False] * 2
    assert all(wait > 0 for wait, _ in started[5:])
    # A success forgives its own attempt and the account's failures from that address.
    throttle.succeeded("admin", "192.0.2.1", started[0][1])
    assert throttle.attempt("admin", "192.0.2.1")[0] == 0
    # Wider limits: the account from anywhere (8 here: 5 counted so far), and an address
    # over all accounts.
    others = [throttle.attempt("admin", f"198.51.100.{i}")[0] == 0 for i in range(4)]
    assert others == [True, True, True, False]
    many = [throttle.attempt(f"user{i}", "203.0.113.9")[0] == 0 for i in range(21)]
    assert many == [True] * 20 + [False]


def test_a_failed_sign_in_needs_no_write_lock(tmp_path: Path) -> None:
    """The password check (argon2, ~0.2 s) ran inside a write transaction, holding SQLite's
    write lock: a burst of wrong sign-ins stalled every SCIM write (one POST took 10.9 s).
    Now only a successful sign-in writes, after the check: with another process holding the
    write lock, a wrong password is still answered at once."""
    db = tmp_path / "portal.db"
    engine = create_engine(f"sqlite:///{db}")
    app = create_app(Settings(), engine)
    with engine.begin() as conn:
        admins.create(conn, "admin", PASSWORD, audit.CLI)
    import sqlite3

    with TestClient(app) as client:
        portal = Portal(client, engine)
        token = portal.csrf("/admin/login")
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            r = client.post(
                "/admin/login",
                data={"username": "admin", "password": "wrong password!", "csrf": token},
                follow_redirects=False,
            )
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert r.status_code == 401 and "Wrong username or password" in r.text


def test_login_without_csrf_token_is_refused(portal: Portal) -> None:
    """A sign-in form posted without the CSRF token is refused."""
    portal.client.get("/admin/login")
    r = portal.client.post(
        "/admin/login", data={"username": "admin", "password": PASSWORD}, follow_redirects=False
    )
    assert r.status_code == 403
    assert portal.client.get(APPS, follow_redirects=False).status_code == 303


def test_open_redirect_after_sign_in_is_blocked(portal: Portal) -> None:
    """The 'next' target must stay inside the portal."""
    token = portal.csrf("/admin/login")
    r = portal.client.post(
        "/admin/login",
        data={
            "username": "admin",
            "password": PASSWORD,
            "csrf": token,
            "next": "https://evil.example/",
        },
        follow_redirects=False,
    )
    assert r.headers["location"] == "/admin/"


def test_sign_out_ends_the_session(portal: Portal) -> None:
    """Signing out (a CSRF-protected POST) ends the session, even for a copied cookie."""
    portal.login()
    copied = portal.client.cookies.get("scimd_session")
    assert copied
    r = portal.post("/admin/logout", {}, APPS)
    assert r.status_code == 303
    assert portal.client.get(APPS, follow_redirects=False).status_code == 303
    portal.client.cookies.set("scimd_session", copied)
    assert portal.client.get(APPS, follow_redirects=False).status_code == 303


def test_password_reset_ends_existing_sessions(portal: Portal) -> None:
    """After a password reset, sessions signed in with the old password are signed out."""
    portal.login()
    with portal.engine.begin() as conn:
        admins.reset_password(conn, "admin", "a brand new password", audit.CLI)
    assert portal.client.get(APPS, follow_redirects=False).status_code == 303


def test_add_bearer_application_shows_secret_once(portal: Portal) -> None:
    """Add shows the client id and secret once; the secret works on SCIM; the list omits it."""
    portal.login()
    r = portal.post(
        f"{APPS}/add",
        {"name": "Entra", "grant": "bearer", "scope": ["API", "USER SYNC"], "lifetime": "0"},
        f"{APPS}/add",
    )
    assert r.status_code == 200 and "you will not see it again" in r.text
    assert r.headers["cache-control"] == "no-store"
    secret = re.search(r'id="client_secret" type="text" readonly value="([^"]+)"', r.text)
    assert secret
    token = secret.group(1)
    ok = portal.client.get("/scim/v2/Users", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    listing = portal.client.get(APPS).text
    assert "Entra" in listing and token not in listing and "never expires" in listing
    assert "paste the client secret as the <strong>Secret Token</strong>" in r.text


def test_a_client_credentials_secret_is_not_offered_as_the_secret_token(portal: Portal) -> None:
    """Pasted as Entra's Secret Token, a client credentials secret is a 401: its page says to
    exchange it at the token endpoint instead, as the command line does."""
    portal.login()
    form = {"name": "CC", "grant": "client_credentials", "scope": ["USER SYNC"], "lifetime": "3600"}
    r = portal.post(f"{APPS}/add", form, f"{APPS}/add")
    assert r.status_code == 200 and "Secret Token" not in r.text
    assert "/oauth2/server/token" in r.text and "not a token" in r.text
    # The form's lifetime starts empty: the grant's default, an hour for client credentials.
    assert (
        'name="lifetime" type="number" min="0" max="31622400" step="1" value=""'
        in portal.client.get(f"{APPS}/add").text
    )
    for name, grant in (("CC2", "client_credentials"), ("B2", "bearer")):
        form = {"name": name, "grant": grant, "scope": ["USER SYNC"], "lifetime": ""}
        assert portal.post(f"{APPS}/add", form, f"{APPS}/add").status_code == 200
    with portal.engine.connect() as conn:
        rows = conn.execute(sa.select(applications.c.name, applications.c.token_lifetime)).all()
    lifetimes = {name: lifetime for name, lifetime in rows}
    assert lifetimes == {"CC": 3600, "CC2": 3600, "B2": 0}


def test_add_form_errors_are_shown(portal: Portal) -> None:
    """No scope or a bad lifetime re-shows the form with the problem, creating nothing."""
    portal.login()
    r = portal.post(f"{APPS}/add", {"name": "X", "grant": "bearer", "lifetime": "0"}, f"{APPS}/add")
    assert r.status_code == 400 and "at least one scope" in r.text
    r = portal.post(
        f"{APPS}/add",
        {"name": "X", "grant": "bearer", "scope": "API", "lifetime": "soon"},
        f"{APPS}/add",
    )
    assert r.status_code == 400 and "whole number" in r.text
    with portal.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(applications)).scalar() == 0


def test_disable_rotate_revoke_delete_from_the_page(portal: Portal) -> None:
    """Disable stops the token at once; rotate keeps both; revoking the old one stops it."""
    with portal.engine.begin() as conn:
        app, old = apps.create_app(conn, "E", "bearer", ["API", "USER SYNC"], audit.CLI)
    cid = app["client_id"]
    portal.login()

    def status(token: str) -> int:
        h = {"Authorization": f"Bearer {token}"}
        return portal.client.get("/scim/v2/Users", headers=h).status_code

    detail = f"{APPS}/{cid}"
    page = portal.client.get(detail).text  # times as the list shows them, not raw ISO
    created = app["created"][:16].replace("T", " ")
    assert f"<dd>{created} UTC</dd>" in page and app["created"] not in page
    assert portal.post(f"{detail}/disable", {"confirm": "yes"}, detail).status_code == 303
    assert status(old) == 401
    portal.post(f"{detail}/enable", {}, detail)
    assert status(old) == 200
    r = portal.post(f"{detail}/rotate", {}, detail)
    new = re.search(r'id="client_secret" type="text" readonly value="([^"]+)"', r.text)
    assert new and status(new.group(1)) == 200 and status(old) == 200
    page = portal.client.get(detail).text
    first_secret = re.search(r"/secrets/(\d+)/revoke", page)
    assert first_secret
    portal.post(f"{detail}/secrets/{first_secret.group(1)}/revoke", {}, detail)
    assert status(old) == 401 and status(new.group(1)) == 200
    r = portal.post(f"{detail}/delete", {}, detail)  # without the confirmation tick
    assert status(new.group(1)) == 200
    portal.post(f"{detail}/delete", {"confirm": "yes"}, detail)
    assert status(new.group(1)) == 401
    with portal.engine.connect() as conn:
        ops = [r["operation"] for r in audit.history(conn, resource_id=cid)]
    assert ops[:5] == ["app.delete", "app.revoke_secret", "app.rotate", "app.enable", "app.disable"]
    with portal.engine.connect() as conn:
        rows = audit.history(conn, resource_id=cid)
    assert {r["actor"] for r in rows if r["operation"] != "app.create"} == {"admin"}
    # Each names the application: once it is deleted, its id alone said nothing.
    details = [r["detail"] for r in rows[:5]]
    names = [(json.loads(d) if isinstance(d, str) else d)["name"] for d in details]
    assert names == [app["name"]] * 5


def test_post_without_csrf_changes_nothing(portal: Portal) -> None:
    """A forged POST (no CSRF token) to disable an application is refused with 403."""
    with portal.engine.begin() as conn:
        app, token = apps.create_app(conn, "E", "bearer", ["USER SYNC"], audit.CLI)
    portal.login()
    r = portal.client.post(f"{APPS}/{app['client_id']}/disable", data={}, follow_redirects=False)
    assert r.status_code == 403
    h = {"Authorization": f"Bearer {token}"}
    assert portal.client.get("/scim/v2/Users", headers=h).status_code == 200


def test_first_start_setup_link(tmp_path: Path) -> None:
    """The one-time set-up link creates the first admin, then stops working."""
    engine = create_engine(f"sqlite:///{tmp_path / 's.db'}")
    app = create_app(Settings(), engine)
    with engine.begin() as conn:
        token = admins.new_setup_token(conn)
        # A restart, or a second process on the database, prints another link: the one the
        # admin already has stays valid (it used to be replaced).
        later = admins.new_setup_token(conn)
        assert later and admins.setup_token_valid(conn, later)
        assert not admins.setup_token_valid(conn, "guess")
    assert token
    with TestClient(app) as c:
        setup = c.get(f"/admin/setup?token={token}")
        assert setup.headers["cache-control"] == "no-store"  # it holds the one-time token
        page = setup.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf and "Create the first admin" in page
        # A form whose session expired goes back to the link, token included (it showed
        # "used, or expired", about a link that was neither).
        expired = c.post(
            "/admin/setup",
            data={"csrf": "stale", "token": token, "username": "root", "password": PASSWORD},
            headers={"Referer": f"http://testserver/admin/setup?token={token}"},
            follow_redirects=False,
        )
        assert expired.headers["location"] == f"/admin/setup?token={token}"
        again = c.get(expired.headers["location"]).text
        assert "The form expired" in again and "Create the first admin" in again
        r = c.post(
            "/admin/setup",
            data={"csrf": csrf.group(1), "token": token, "username": "root", "password": "short"},
        )
        assert r.status_code == 400 and "at least" in r.text
        second = TestClient(app)  # another browser, with the other link open
        other = re.search(
            r'name="csrf" value="([^"]+)"', second.get(f"/admin/setup?token={later}").text
        )
        assert other
        r = c.post(
            "/admin/setup",
            data={"csrf": csrf.group(1), "token": token, "username": "root", "password": PASSWORD},
            follow_redirects=False,
        )
        assert r.status_code == 303
        assert "it was used, or it expired" in c.get(f"/admin/setup?token={token}").text
        assert "it was used, or it expired" in c.get(f"/admin/setup?token={later}").text
        # A form opened before the admin existed said "restart the server for a new one"
        # (a restart prints none then) and showed the form again.
        r = second.post(
            "/admin/setup",
            data={"csrf": other.group(1), "token": later, "username": "two", "password": PASSWORD},
        )
        assert r.status_code == 400 and "exists already: sign in" in r.text
        assert "restart the server" not in r.text and 'name="password"' not in r.text
    with engine.begin() as conn:
        assert admins.new_setup_token(conn) is None
        assert admins.verify(conn, "ROOT", PASSWORD) is not None
        # The link signed the admin in, which `scimd admin list` shows (it said "never").
        assert admins.list_admins(conn)[0]["last_login"] is not None


def test_security_headers_on_portal_pages(portal: Portal) -> None:
    """Portal pages forbid framing and restrict scripts to the site's own."""
    r = portal.client.get("/admin/login")
    assert r.headers["x-frame-options"] == "DENY"
    assert "script-src 'self'" in r.headers["content-security-policy"]


def _once(portal: Portal, page: str) -> dict[str, str]:
    """The csrf token and the one-time form id of a page's form that makes a secret."""
    html = portal.client.get(page).text
    csrf = re.search(r'name="csrf" value="([^"]+)"', html)
    once = re.search(r'name="once" value="([^"]+)"', html)
    assert csrf and once, html[:500]
    return {"csrf": csrf.group(1), "once": once.group(1)}


def test_resubmitting_a_form_that_made_a_secret_makes_nothing(portal: Portal) -> None:
    """The pages showing a new secret answer the POST itself; reloading one re-sent the POST
    and made another application (or secret) that nobody saw."""
    portal.login()
    form = {"name": "Once", "grant": "bearer", "scope": ["API", "USER SYNC"], "lifetime": "0"}
    sent = {**form, **_once(portal, f"{APPS}/add")}
    first = portal.client.post(f"{APPS}/add", data=sent, follow_redirects=False)
    assert first.status_code == 200 and "you will not see it again" in first.text
    again = portal.client.post(f"{APPS}/add", data=sent, follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == APPS
    assert "already submitted" in portal.client.get(APPS).text
    with portal.engine.connect() as conn:
        rows = conn.execute(sa.select(applications.c.client_id)).scalars().all()
    assert len(rows) == 1
    page = f"{APPS}/{rows[0]}"
    rotate = _once(portal, page)
    assert portal.client.post(f"{page}/rotate", data=rotate).status_code == 200
    again = portal.client.post(f"{page}/rotate", data=rotate, follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == page
    with portal.engine.connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM client_secrets")).scalar_one()
    assert n == 2  # the first secret and one rotation


def test_a_form_sent_twice_at_once_makes_one_secret(portal: Portal) -> None:
    """Two submissions sent together (a double click on a slow link) carry the same session
    cookie, and both found the form's one-time id unused there: two secrets were made, one
    shown to nobody. The id is now recorded where the secret is made."""
    portal.login()
    form = {"name": "Twice", "grant": "bearer", "scope": ["API", "USER SYNC"], "lifetime": "0"}
    sent = {**form, **_once(portal, f"{APPS}/add")}

    def as_sent_together(path: str, data: dict[str, str]) -> tuple[Any, Any]:
        # The second request carries the cookie the first was sent with, not its answer's.
        other = TestClient(portal.client.app, base_url=str(portal.client.base_url))
        for c in portal.client.cookies.jar:
            other.cookies.set(c.name, c.value or "", domain=c.domain, path=c.path)
        first = portal.client.post(path, data=data, follow_redirects=False)
        return first, other.post(path, data=data, follow_redirects=False)

    first, second = as_sent_together(f"{APPS}/add", sent)
    assert first.status_code == 200 and "you will not see it again" in first.text
    assert second.status_code == 303 and second.headers["location"] == APPS
    with portal.engine.connect() as conn:
        rows = conn.execute(sa.select(applications.c.client_id)).scalars().all()
    assert len(rows) == 1
    page = f"{APPS}/{rows[0]}"
    rotate = _once(portal, page)
    first, second = as_sent_together(f"{page}/rotate", rotate)
    assert first.status_code == 200 and second.status_code == 303
    with portal.engine.connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM client_secrets")).scalar_one()
    assert n == 2  # the first secret and one rotation


def test_a_form_sent_after_the_session_ended_says_it_was_not_saved(portal: Portal) -> None:
    """A form posted once the session had ended went to the sign-in page with no word that
    nothing was saved; after signing in, what was typed was gone."""
    portal.login()
    form = {"name": "Late", "type": "String", "csrf": portal.csrf("/admin/properties")}
    portal.client.post("/admin/logout", data={"csrf": portal.csrf("/admin/")})
    r = portal.client.post("/admin/properties", data=form, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/admin/login")
    page = portal.client.get(r.headers["location"]).text
    assert "the form you sent was not saved" in page
    assert "the form you sent" not in portal.client.get("/admin/login").text  # said once


def test_a_form_whose_write_failed_can_be_sent_again(tmp_path: Path) -> None:
    """The one-time id went into the session before the write: when the write failed (503,
    "retry the request"), the retry was refused as already submitted, and nothing existed."""
    import sqlite3

    db = tmp_path / "busy.db"
    engine = create_engine(f"sqlite:///{db}", timeout=1)
    app = create_app(Settings(database_timeout=1), engine)
    with engine.begin() as conn:
        admins.create(conn, "admin", PASSWORD, audit.CLI)
    with TestClient(app) as client:
        portal = Portal(client, engine)
        portal.login()
        form = {"name": "Retried", "grant": "bearer", "scope": "USER SYNC", "lifetime": "0"}
        sent = {**form, **_once(portal, f"{APPS}/add")}
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process writing
        busy = client.post(f"{APPS}/add", data=sent, follow_redirects=False)
        holder.execute("ROLLBACK")
        holder.close()
        assert busy.status_code == 503
        again = client.post(f"{APPS}/add", data=sent, follow_redirects=False)
        assert again.status_code == 200 and "you will not see it again" in again.text
    engine.dispose()


def test_bearer_lifetimes_and_out_of_range_lifetimes_are_refused(portal: Portal) -> None:
    """A bearer application's lifetime was shown and never applied; a huge one was a 500."""
    portal.login()
    for lifetime, said in (("3600", "does not expire"), ("9" * 30, "from 0 to")):
        r = portal.post(
            f"{APPS}/add",
            {"name": "L", "grant": "bearer", "scope": "USER SYNC", "lifetime": lifetime},
            f"{APPS}/add",
        )
        assert r.status_code == 400 and said in r.text
    with portal.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(applications)).scalar() == 0


def test_a_form_posted_after_the_session_ended_returns_to_its_page(portal: Portal) -> None:
    """The sign-in page sent the admin back to the POST's own URL, a bare 405."""
    r = portal.client.post(
        f"{APPS}/some-id/disable",
        data={"csrf": "x"},
        headers={"Referer": f"http://testserver{APPS}/some-id"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r.headers["location"] == f"/admin/login?next={APPS}/some-id"
    r = portal.client.get("/admin/users?q=a%26b&startIndex=2", follow_redirects=False)
    assert r.headers["location"] == "/admin/login?next=/admin/users%3Fq%3Da%2526b%26startIndex%3D2"
    r = portal.client.post(
        f"{APPS}/x/disable",
        data={},
        headers={"Referer": "https://evil.example/admin/x"},
        follow_redirects=False,
    )
    assert r.headers["location"] == "/admin/login?next=/admin/"


def test_audit_dates_at_the_end_of_the_calendar_or_inverted_are_explained(
    portal: Portal,
) -> None:
    """to=9999-12-31 (a date picker allows it) was a 500; from after to gave an empty list."""
    portal.login()
    r = portal.client.get("/admin/audit?to=9999-12-31")
    assert r.status_code == 200
    r = portal.client.get("/admin/audit?from=2026-02-01&to=2026-01-01")
    assert r.status_code == 400 and "after the" in r.text


def test_a_cookie_signed_with_the_database_key_is_not_a_session(portal: Portal) -> None:
    """The cookie's signing key is in the database: whoever reads the database (a backup) can
    sign a cookie. It also needs a session id whose digest the database holds, which it cannot
    derive; a real sign-in still works, and signing out ends the session server-side."""
    import base64
    import json

    import itsdangerous

    from scimd.store.tables import admin_sessions

    assert portal.login().status_code == 303
    with portal.engine.connect() as conn:
        key = admins.session_secret(conn)
        admin = admins.get(conn, 1)
        stored = conn.execute(sa.select(admin_sessions.c.digest)).scalars().all()
    assert admin is not None and len(stored) == 1
    signer = itsdangerous.TimestampSigner(key)
    for forged_session in (
        {"admin": admin.pk, "epoch": admin.session_epoch},
        {"admin": admin.pk, "epoch": admin.session_epoch, "sid": stored[0]},  # the digest
    ):
        payload = base64.b64encode(json.dumps(forged_session).encode())
        forged = TestClient(portal.client.app)
        forged.cookies.set("scimd_session", signer.sign(payload).decode())
        r = forged.get(APPS, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/admin/login")
    assert portal.client.get(APPS, follow_redirects=False).status_code == 200
    # A forged cookie (with a CSRF token of its own) cannot sign the real session out.
    fake = {"admin": admin.pk, "epoch": admin.session_epoch, "csrf": "zz"}
    forged = TestClient(portal.client.app)
    forged.cookies.set(
        "scimd_session", signer.sign(base64.b64encode(json.dumps(fake).encode())).decode()
    )
    forged.post("/admin/logout", data={"csrf": "zz"}, follow_redirects=False)
    assert portal.client.get(APPS, follow_redirects=False).status_code == 200
    logout = portal.post("/admin/logout", {}, APPS)
    assert logout.status_code == 303
    with portal.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(admin_sessions)).scalar() == 0


def test_oversized_or_multipart_forms_are_refused_before_they_are_buffered(
    portal: Portal,
) -> None:
    """The sign-in page takes posts from anyone, and Starlette's form parser buffered up to
    1,000 fields of 1 MB each: one request could hold a gigabyte of the server's memory. The
    portal now reads at most 64 KiB of a form, urlencoded only."""
    token = portal.csrf("/admin/login")
    fields = {"username": "admin", "password": PASSWORD, "csrf": token, "next": "/admin/"}
    big = portal.client.post("/admin/login", data={**fields, "pad": "x" * 70_000})
    assert big.status_code == 400 and "larger than 64 KiB" in big.text

    def chunks() -> Iterator[bytes]:  # no Content-Length: read until the cap
        yield b"username=admin&pad="
        for _ in range(100):
            yield b"x" * 10_000

    streamed = portal.client.post(
        "/admin/login",
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert streamed.status_code == 400 and "larger than 64 KiB" in streamed.text
    multipart = portal.client.post("/admin/login", data=fields, files={"f": ("f", b"x" * 10)})
    assert multipart.status_code == 400 and "x-www-form-urlencoded" in multipart.text
    # Sign-out takes anyone's post: a form it cannot read was a 500 there.
    for body in ({"files": {"f": ("f", b"x")}}, {"content": b"csrf=\xff"}):
        out = portal.client.post("/admin/logout", follow_redirects=False, **body)  # type: ignore[arg-type]
        assert out.status_code == 303, out.text
    assert portal.client.get(APPS, follow_redirects=False).status_code == 303  # not signed in
    assert portal.login().status_code == 303  # the same form, small, signs in


def test_the_sign_in_page_says_when_no_admin_exists_yet(tmp_path: Path) -> None:
    """Before the first admin, /admin/ led to a sign-in form nobody could use, with no word
    of the set-up link or `scimd admin create`."""
    engine = create_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    with TestClient(create_app(Settings(), engine)) as client:
        page = client.get("/admin/")
        assert "No admin exists yet" in page.text and "scimd admin create" in page.text
        with engine.begin() as conn:
            admins.create(conn, "admin", PASSWORD, audit.CLI)
        assert "No admin exists yet" not in client.get("/admin/login").text
        stale = client.get("/admin/setup?token=stale").text
        assert "it was used, or it expired" in stale and "scimd admin reset-password" in stale


def test_the_portal_links_its_own_files_by_path(tmp_path: Path) -> None:
    """Its stylesheet and script were absolute http:// URLs built from the request: behind a
    TLS proxy that does not say X-Forwarded-Proto, an https page then loaded them as mixed
    content, blocked (no styles, no Copy buttons)."""
    app = create_app(Settings(), create_engine(f"sqlite:///{tmp_path / 'p.db'}"))
    with TestClient(app, base_url="http://idp.example.com") as client:
        page = client.get("/admin/login").text
        assert 'href="/admin/static/portal.css"' in page
        assert (
            'src="/admin/static/portal.js"' in page and "idp.example.com/admin/static" not in page
        )
        assert client.get("/admin/static/portal.css").status_code == 200


def test_sign_ins_waiting_for_another_process_lock_leave_the_portal_answering(
    tmp_path: Path,
) -> None:
    """A portal write meeting another process's SQLite write lock waited in SQLite's busy
    handler on one of the portal's two threads: two sign-ins froze every portal page, the
    sign-in form included, until the lock was freed or 30 s had passed. The writes now wait
    asynchronously; the form is answered meanwhile, and the sign-ins complete once the lock
    is released."""
    import sqlite3
    import threading

    import httpx

    from scimd.store.migrate import ensure_current
    from support.live_server import start_server

    db = tmp_path / "locked-portal.db"
    engine = create_engine(f"sqlite:///{db}")
    ensure_current(engine)
    with engine.begin() as conn:
        admins.create(conn, "admin", PASSWORD, audit.CLI)
    engine.dispose()
    with start_server(f"sqlite:///{db}", log_dir=tmp_path) as server:
        clients = [httpx.Client(base_url=server.root_url, timeout=60) for _ in range(3)]
        forms = []
        for c in clients[:2]:
            found = re.search(r'name="csrf" value="([^"]+)"', c.get("/admin/login").text)
            assert found is not None
            forms.append({"username": "admin", "password": PASSWORD, "csrf": found.group(1)})
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        held = True
        outcomes: list[int] = []
        try:
            signins = [
                threading.Thread(
                    target=lambda c=c, f=f: outcomes.append(
                        c.post("/admin/login", data=f).status_code
                    )
                )
                for c, f in zip(clients[:2], forms, strict=True)
            ]
            for t in signins:
                t.start()
            time.sleep(0.5)  # both sign-ins are waiting for the lock
            # Answered while they wait (a 10 s bound only to fail rather than hang: the old
            # wait was 30 s).
            page = clients[2].get("/admin/login", timeout=10)
            assert page.status_code == 200
            assert outcomes == []
            holder.rollback()
            held = False
            for t in signins:
                t.join(60)
        finally:
            if held:
                holder.rollback()
            holder.close()
            for c in clients:
                c.close()
        assert outcomes == [303, 303], outcomes


def test_a_sign_in_waiting_for_the_lock_checks_the_password_once(
    portal: Portal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The password check and the sign-in's write were one call, and a call whose write meets
    SQLite's lock is run again every ~50 ms: each attempt checked the password again (argon2,
    ~0.2 s of CPU each; 25 s of CPU for one sign-in behind a 30 s lock)."""
    import sqlite3
    import threading

    checks: list[str] = []
    real = admins.password_matches

    def counted(found: Any, password: str) -> bool:
        checks.append(password)
        return real(found, password)

    monkeypatch.setattr(admins, "password_matches", counted)
    token = portal.csrf("/admin/login")
    holder = sqlite3.connect(tmp_path / "portal.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(1.0, holder.rollback)
    release.start()
    try:
        r = portal.client.post(
            "/admin/login",
            data={"username": "admin", "password": PASSWORD, "csrf": token},
            follow_redirects=False,
        )
    finally:
        release.join()
        holder.close()
    assert r.status_code == 303
    assert checks == [PASSWORD]


def test_servers_starting_together_share_one_session_key_and_keep_both_links(
    postgres_url: str,
) -> None:
    """Replicas starting at once on PostgreSQL each read "no key", then one failed on the
    insert (a unique violation: that server did not start) or overwrote the other's key, so
    each signed cookies the other refused; a set-up link printed by one was dropped by the
    other. The second now waits for the first's row and reads its value."""
    import threading

    from scimd.store import migrate

    engine = create_engine(postgres_url)
    migrate.ensure_current(engine)
    first = engine.connect()
    first.begin()
    key = admins.session_secret(first)
    link = admins.new_setup_token(first)
    got: dict[str, Any] = {}

    other = create_engine(postgres_url)  # another server's: its own connections

    def second() -> None:
        try:
            with other.begin() as conn:
                got["key"] = admins.session_secret(conn)
                got["link"] = admins.new_setup_token(conn)
        except Exception as e:
            got["error"] = e

    waiting = threading.Thread(target=second)
    waiting.start()
    _until_blocked(postgres_url, "the second server never waited for the first")
    first.commit()
    first.close()
    waiting.join(30)
    assert "error" not in got, got.get("error")
    assert got["key"] == key
    with engine.connect() as conn:
        assert admins.session_secret(conn) == key
        assert link and admins.setup_token_valid(conn, link)
        assert admins.setup_token_valid(conn, got["link"])
    for e in (engine, other):
        e.dispose()


def _until_blocked(postgres_url: str, failure: str) -> None:
    """Until a session of this test's database waits for a lock (then the caller commits)."""
    # Out of any transaction: pg_stat_activity is read once per transaction.
    watcher = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with watcher.connect() as watch:
            for _ in range(500):
                blocked = watch.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        # Not another test's session, nor autovacuum.
                        " AND datname = current_database() AND backend_type = 'client backend'"
                    )
                ).scalar_one()
                if blocked:
                    return
                time.sleep(0.01)
        raise AssertionError(failure)
    finally:
        watcher.dispose()


def test_one_set_up_link_used_twice_at_once_makes_one_admin(postgres_url: str) -> None:
    """Two browsers posting one set-up link together, to two processes on PostgreSQL, each
    saw no admin and a valid link, and both accounts were made (the link is one-time). The
    second now waits for the first and is told an admin exists."""
    import threading

    from scimd.store import migrate

    engine = create_engine(postgres_url)
    migrate.ensure_current(engine)
    with engine.begin() as conn:
        link = admins.new_setup_token(conn)
    assert link is not None
    first = engine.connect()
    first.begin()
    admins.complete_setup(first, link, "alice", "correct horse battery", "req-1")
    got: dict[str, Any] = {}
    other = create_engine(postgres_url)

    def second() -> None:
        try:
            with other.begin() as conn:
                admins.complete_setup(conn, link, "mallory", "correct horse battery")
        except Exception as e:
            got["error"] = e

    waiting = threading.Thread(target=second)
    waiting.start()
    _until_blocked(postgres_url, "the second set-up never waited for the first")
    first.commit()
    first.close()
    waiting.join(30)
    assert isinstance(got.get("error"), admins.SetupLinkSpent), got
    with engine.connect() as conn:
        assert [a["username"] for a in admins.list_admins(conn)] == ["alice"]
        made = conn.execute(
            sa.select(audit_table.c.request_id).where(audit_table.c.operation == "admin.create")
        ).scalar_one()
    assert made == "req-1"  # the portal's request, so that its log line can be found
    for e in (engine, other):
        e.dispose()


def test_an_admin_made_from_the_command_line_during_set_up_does_not_deadlock(
    postgres_url: str,
) -> None:
    """PostgreSQL: the set-up page locks the set-up links' row, then adds its admin; the
    command line added its admin, then updated that row. An admin of one name made both ways
    at once deadlocked (the page's answer was a database error). Both now take the row first:
    the page waits, then is told an admin exists."""
    import threading

    from scimd.store import migrate

    engine = create_engine(postgres_url)
    migrate.ensure_current(engine)
    with engine.begin() as conn:
        link = admins.new_setup_token(conn)
    assert link is not None
    got: dict[str, Any] = {}

    def page() -> None:
        try:
            with engine.begin() as conn:
                admins.complete_setup(conn, link, "admin", "correct horse battery")
        except Exception as e:
            got["error"] = e

    setup = threading.Thread(target=page)
    with engine.connect() as cli:
        execute = cli.execute

        def stepped(statement: Any, *args: Any, **kw: Any) -> Any:
            result = execute(statement, *args, **kw)
            if "INSERT INTO admins" in str(statement) and not setup.ident:
                setup.start()  # the page's set-up comes in between (the deadlock's order)
                setup.join(1.0)
            return result

        cli.execute = stepped  # type: ignore[method-assign]
        with cli.begin():
            admins.create(cli, "admin", "correct horse battery", audit.CLI)
    setup.join(30)
    engine.dispose()
    assert isinstance(got.get("error"), admins.SetupLinkSpent), got


def test_head_on_a_page_with_a_form_is_its_get(portal: Portal) -> None:
    """RFC 9110 §9.3.2: HEAD is GET without the body. Pages that take GET and POST ran their
    POST branch for it: 403 for a missing form token (an uptime check of /admin/login saw
    the portal down), and a flash "the form expired" left for the admin's next page."""
    assert portal.client.head("/admin/login").status_code == 200
    assert portal.login().status_code == 303
    for page in (
        "/admin/properties",
        "/admin/security/oauth2-applications/add",
        "/admin/connection",
    ):
        r = portal.client.head(page)
        assert r.status_code == 200, (page, r.status_code)
        assert r.content == b""
    assert "expired" not in portal.client.get("/admin/").text


def test_a_password_typed_as_the_username_is_not_logged(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed sign-in logged its username as typed: an admin who typed the password into
    the username field had it written to the log. A name that is no admin's is logged as its
    length; an admin's name still is (who was tried is what an operator needs)."""
    caplog.set_level("INFO", logger="scimd.portal")
    assert portal.login(username=PASSWORD, password="admin").status_code == 401
    assert portal.login(username="admin", password="wrong").status_code == 401
    fields = [getattr(r, "fields", {}) for r in caplog.records if "sign-in" in r.getMessage()]
    assert [f.get("username") for f in fields] == [
        f"(not an admin: {len(PASSWORD)} characters)",
        "admin",
    ]
    assert PASSWORD not in caplog.text


def test_a_session_ends_eight_hours_after_sign_in_however_active(portal: Portal) -> None:
    """The session cookie is signed again on every reply, so only the server's check of when
    the admin signed in ends a session: a copied cookie kept busy must not last for ever."""
    portal.login()
    assert portal.client.get(APPS, follow_redirects=False).status_code == 200
    with portal.engine.begin() as conn:  # signed in 7 h 59 min ago, and active since
        conn.execute(sa.text("UPDATE admin_sessions SET created = created - :s"), {"s": 28740})
    assert portal.client.get(APPS, follow_redirects=False).status_code == 200
    with portal.engine.begin() as conn:  # now 8 h 1 min ago
        conn.execute(sa.text("UPDATE admin_sessions SET created = created - 120"))
    r = portal.client.get(APPS, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/admin/login")


def test_portal_audit_records_carry_the_request_id_of_their_reply(portal: Portal) -> None:
    """Each application change made in the portal is audited with the id its reply (and its
    access log line) carries, so an admin's action can be traced from one to the other."""
    portal.login()
    r = portal.post(
        f"{APPS}/add", {"name": "Traced", "grant": "bearer", "scope": ["API"]}, f"{APPS}/add"
    )
    assert r.status_code == 200, r.text
    rids = {"app.create": r.headers["x-request-id"]}
    with portal.engine.connect() as conn:
        cid: str = conn.execute(
            sa.select(applications.c.client_id).where(applications.c.name == "Traced")
        ).scalar_one()
    detail = f"{APPS}/{cid}"
    for action, data in (
        ("rotate", {}),
        ("disable", {"confirm": "yes"}),
        ("enable", {}),
        ("delete", {"confirm": "yes"}),
    ):
        r = portal.post(f"{detail}/{action}", data, detail)
        assert r.status_code in (200, 303), (action, r.status_code)
        rids[f"app.{action}"] = r.headers["x-request-id"]
    with portal.engine.connect() as conn:
        rows = audit.history(conn, resource_id=cid)
    assert {row["operation"]: row["request_id"] for row in rows} == rids


def test_usernames_of_128_characters_are_taken_and_longer_ones_refused(portal: Portal) -> None:
    """The documented bound is 1-128 characters: one more must be refused before it reaches
    the database, the bound itself must be accepted."""
    with portal.engine.begin() as conn:
        admins.create(conn, "a" * 128, PASSWORD, audit.CLI)
        with pytest.raises(admins.InvalidValue, match="1-128"):
            admins.create(conn, "b" * 129, PASSWORD, audit.CLI)


def test_a_password_of_exactly_the_minimum_length_is_accepted(portal: Portal) -> None:
    """The set-up page and ``admin create`` say "at least 10 characters": ten must do."""
    with portal.engine.begin() as conn:
        admins.create(conn, "tenchars", "x" * admins.MIN_PASSWORD, audit.CLI)
        with pytest.raises(admins.InvalidValue, match="at least"):
            admins.create(conn, "ninechars", "x" * (admins.MIN_PASSWORD - 1), audit.CLI)
    assert portal.login("tenchars", "x" * admins.MIN_PASSWORD).status_code == 303


def test_signing_in_on_a_second_browser_keeps_the_first_signed_in(tmp_path: Path) -> None:
    """A sign-in clears only the admin's expired sessions: signing in on a laptop must not
    sign the admin out of the browser already open on another machine."""
    engine = create_engine(f"sqlite:///{tmp_path / 'portal.db'}")
    app = create_app(Settings(), engine)
    with engine.begin() as conn:
        admins.create(conn, "admin", PASSWORD, audit.CLI)
    with TestClient(app) as first_client, TestClient(app) as second_client:
        first, second = Portal(first_client, engine), Portal(second_client, engine)
        assert first.login().status_code == 303
        assert second.login().status_code == 303
        assert first.client.get(APPS, follow_redirects=False).status_code == 200
        assert second.client.get(APPS, follow_redirects=False).status_code == 200


def test_the_username_is_not_case_sensitive_at_sign_in(portal: Portal) -> None:
    """Admin names are unique regardless of case ('alice' and 'ALICE' are one account), so
    signing in as 'ADMIN' must reach the account 'admin'."""
    assert portal.login(username="ADMIN").status_code == 303
    assert portal.client.get(APPS, follow_redirects=False).status_code == 200


def test_the_ten_newest_set_up_links_stay_valid(tmp_path: Path) -> None:
    """At most ten set-up links are kept: the oldest one goes, never a recent one (the link a
    restart printed a moment ago is the one the operator is about to open)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'links.db'}")
    create_app(Settings(), engine)  # creates the schema
    with engine.begin() as conn:
        links = [admins.new_setup_token(conn) for _ in range(11)]
        valid = [admins.setup_token_valid(conn, str(link)) for link in links]
    assert valid == [False] + [True] * 10


def test_a_session_survives_a_restart_of_the_server(tmp_path: Path) -> None:
    """The cookie-signing key is kept in the database and shared: a restart (or a second
    server process on the same database) must not sign every admin out."""
    engine = create_engine(f"sqlite:///{tmp_path / 'portal.db'}")
    first_app = create_app(Settings(), engine)
    with engine.begin() as conn:
        admins.create(conn, "admin", PASSWORD, audit.CLI)
    with TestClient(first_app) as first:
        assert Portal(first, engine).login().status_code == 303
        cookie = first.cookies.get("scimd_session")
    assert cookie
    with TestClient(create_app(Settings(), engine)) as restarted:
        restarted.cookies.set("scimd_session", cookie)
        assert restarted.get(APPS, follow_redirects=False).status_code == 200


def test_successful_sign_ins_do_not_count_against_the_address(portal: Portal) -> None:
    """Only failures count: an office signing in from behind one NAT address must not be
    locked out by its own successful sign-ins."""
    portal.client.app.state.portal.throttle = LoginThrottle(per_account=5, per_address=2)
    assert [portal.login().status_code for _ in range(3)] == [303] * 3


def test_a_signed_in_admin_is_not_redirected_off_site_by_the_sign_in_page(
    portal: Portal,
) -> None:
    """A signed-in admin opening /admin/login?next=... is sent on at once: the target must
    stay inside the portal, as after a sign-in (a crafted link was an open redirect)."""
    portal.login()
    for target in ("https://evil.example/", "//evil.example/admin"):
        r = portal.client.get("/admin/login", params={"next": target}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/admin/", target


def test_a_lock_out_under_a_minute_says_one_minute_not_zero(portal: Portal) -> None:
    """The refusal tells the admin how long to wait, rounded up: "0 minute(s)" invites an
    immediate retry that is refused again."""
    portal.client.app.state.portal.throttle = LoginThrottle(per_account=2, window=30)
    for _ in range(2):
        assert portal.login(password="wrong password!").status_code == 401
    r = portal.login()
    assert r.status_code == 429 and "Try again in 1 minute(s)." in r.text


def test_signing_in_gives_a_new_csrf_token(portal: Portal) -> None:
    """The session is replaced at sign-in: a form token handed out before it (to anyone
    who planted or read the signed-out session) must not be valid for the admin's forms."""
    before = portal.csrf("/admin/login")
    assert portal.login().status_code == 303
    after = portal.csrf(f"{APPS}/add")
    assert after != before
    r = portal.client.post(
        f"{APPS}/add",
        data={"name": "Planted", "grant": "bearer", "scope": ["API"], "csrf": before},
        follow_redirects=False,
    )
    assert r.status_code == 403
    with portal.engine.connect() as conn:
        assert apps.list_apps(conn) == []


def test_sign_in_cookies_are_secure_http_only_and_same_site_behind_https(
    tmp_path: Path,
) -> None:
    """Behind https (an https public URL) both cookies a sign-in sets, the session and the
    known-browser one, are Secure, HttpOnly and SameSite=Lax: neither may travel over plain
    http or be read by a script."""
    engine = create_engine(f"sqlite:///{tmp_path / 'portal.db'}")
    app = create_app(Settings(public_url="https://scim.example"), engine)
    with engine.begin() as conn:
        admins.create(conn, "admin", PASSWORD, audit.CLI)
    with TestClient(app, base_url="https://testserver") as client:
        r = Portal(client, engine).login()
    assert r.status_code == 303
    cookies = {c.split("=", 1)[0]: c.lower() for c in r.headers.get_list("set-cookie")}
    assert set(cookies) >= {"scimd_session", "scimd_device"}
    for name in ("scimd_session", "scimd_device"):
        flags = {f.strip() for f in cookies[name].split(";")}
        assert {"secure", "httponly", "samesite=lax"} <= flags, (name, cookies[name])


def test_a_portal_sign_in_is_recorded_as_the_admins_last_sign_in(portal: Portal) -> None:
    """``scimd admin list`` shows each admin's last sign-in, which an operator reads to find
    unused or misused accounts: a portal sign-in must set it."""
    with portal.engine.connect() as conn:
        assert admins.list_admins(conn)[0]["last_login"] is None
    assert portal.login().status_code == 303
    with portal.engine.connect() as conn:
        assert admins.list_admins(conn)[0]["last_login"] is not None


def test_a_password_reset_applies_the_same_rules_as_a_new_account(portal: Portal) -> None:
    """A reset must not accept a password the set-up page would refuse (too short), nor
    end the admin's sessions for nothing."""
    portal.login()
    with portal.engine.begin() as conn, pytest.raises(admins.InvalidValue, match="at least"):
        admins.reset_password(conn, "admin", "short", audit.CLI)
    assert portal.client.get(APPS, follow_redirects=False).status_code == 200
    assert portal.login(password="short").status_code == 401


def test_an_action_on_an_application_that_is_no_more_is_not_found(portal: Portal) -> None:
    """An application deleted in another tab: rotating or disabling it answers 404 with the
    reason, as an unknown action does, not a generic 400."""
    portal.login()
    for action in ("rotate", "enable", "explode"):
        r = portal.post(f"{APPS}/no-such-client/{action}", {}, APPS)
        assert r.status_code == 404, (action, r.status_code)
        assert "Not possible" in r.text


def test_a_username_ending_in_a_newline_is_refused(portal: Portal) -> None:
    """A name read from a script's line ("bob\\n") must be refused, not stored with the
    newline: that admin could never sign in by the name shown in ``admin list``."""
    with portal.engine.begin() as conn, pytest.raises(admins.InvalidValue, match="1-128"):
        admins.create(conn, "bob\n", PASSWORD, audit.CLI)
