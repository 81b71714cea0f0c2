"""Work portal forms: the set-up form, how posted forms are read, and one-time messages."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from scimd.auth import admins, apps
from scimd.settings import Settings
from scimd.store import audit
from scimd.store.engine import create_engine
from scimd.web.app import create_app

PASSWORD = "correct horse battery"
APPS = "/admin/security/oauth2-applications"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _csrf(client: TestClient, path: str) -> str:
    m = CSRF.search(client.get(path).text)
    assert m, path
    return html.unescape(m.group(1))


def _sign_in(client: TestClient) -> None:
    r = client.post(
        "/admin/login",
        data={"username": "admin", "password": PASSWORD, "csrf": _csrf(client, "/admin/login")},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'forms.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def client(engine: sa.Engine) -> Iterator[TestClient]:
    """Signed in as the admin."""
    app = create_app(Settings(), engine)
    with engine.begin() as conn:
        admins.create(conn, "admin", PASSWORD, audit.CLI)
    with TestClient(app) as c:
        _sign_in(c)
        yield c


def test_the_set_up_form_takes_a_username_with_spaces_around_it(engine: sa.Engine) -> None:
    """A username pasted with a space around it makes the account of the bare name (the
    sign-in form strips it too), not a refusal on a character no one can see."""
    app = create_app(Settings(), engine)
    with engine.begin() as conn:
        token = admins.new_setup_token(conn)
    assert token
    with TestClient(app) as c:
        page = f"/admin/setup?token={token}"
        r = c.post(
            "/admin/setup",
            data={
                "csrf": _csrf(c, page),
                "token": token,
                "username": " root ",
                "password": PASSWORD,
            },
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
    with engine.connect() as conn:
        assert [a["username"] for a in admins.list_admins(conn)] == ["root"]


def test_a_form_whose_content_type_is_in_capitals_is_read(client: TestClient) -> None:
    """Media types are case-insensitive (RFC 9110 §8.3.1): a client or proxy that writes
    "Application/X-WWW-Form-Urlencoded" sends the same form, and it must be taken."""
    body = urlencode(
        {"csrf": _csrf(client, "/admin/properties"), "name": "Badge", "type": "Integer"}
    )
    r = client.post(
        "/admin/properties",
        content=body,
        headers={"Content-Type": "Application/X-WWW-Form-Urlencoded; charset=UTF-8"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    assert "Badge" in client.get("/admin/properties").text


@pytest.mark.parametrize(
    "lifetime", ["\N{SUPERSCRIPT TWO}", "\uff13\uff16\uff10\uff10", "\u0663\u0666\u0660\u0660"]
)
def test_a_lifetime_in_digits_other_than_ascii_is_refused_in_words(
    client: TestClient, engine: sa.Engine, lifetime: str
) -> None:
    """Unicode counts a superscript two and other scripts' digits as digits: the superscript
    reached int() and was a 500, and full-width or Arabic-Indic 3600 silently set a lifetime
    the admin cannot read back as typed. Only ASCII digits are a lifetime; anything else
    re-shows the form, making nothing."""
    r = client.post(
        f"{APPS}/add",
        data={
            "csrf": _csrf(client, f"{APPS}/add"),
            "name": "Lifetime",
            "grant": "client_credentials",
            "scope": "USER SYNC",
            "lifetime": lifetime,
        },
        follow_redirects=False,
    )
    assert r.status_code == 400 and "digits only" in r.text
    with engine.connect() as conn:
        assert apps.list_apps(conn) == []
