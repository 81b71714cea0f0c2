"""The work portal in a real browser (Playwright driving Debian's chromium) against a real
``scimd serve`` on loopback: the set-up an admin does before connecting Entra ID.

Screenshots of the main pages go to ``$SCIMD_SCREENSHOTS`` when set (the committed ones in
``docs/screenshots/`` were made with ``SCIMD_SCREENSHOTS=docs/screenshots``), else to a
temporary directory.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from support.live_server import ServerProcess, sqlite_url, start_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "a long admin password"
PROPS = "urn:ietf:params:scim:schemas:extension:bizagi:2.0:UserProperties"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: `apt-get install chromium` (.ci/run does it)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    work = tmp_path_factory.mktemp("portal")
    with start_server(sqlite_url(work / "portal.db"), log_dir=work) as s:
        yield s


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("SCIMD_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def page(browser: Browser, server: ServerProcess, shots: Path) -> Iterator[Page]:
    """A signed-in admin, set up through the one-time link the server printed on first start."""
    m = re.search(r"(http://\S+/admin/setup\?token=\S+)", server.stderr_text())
    assert m, server.stderr_text()
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    p = context.new_page()
    p.goto(m.group(1))
    p.fill("#username", "admin")
    p.fill("#password", PASSWORD)
    p.click("button[type=submit]")
    p.wait_for_url(re.compile(r"/admin/"))
    yield p
    context.close()


def _scim(server: ServerProcess, token: str, path: str = "/Users") -> httpx.Response:
    return httpx.get(
        f"{server.scim_url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def test_sign_in_page_and_wrong_password(
    browser: Browser, server: ServerProcess, shots: Path
) -> None:
    """The sign-in page rejects a wrong password with a visible message."""
    context = browser.new_context(viewport={"width": 1280, "height": 700})
    p = context.new_page()
    p.goto(f"{server.root_url}/admin/security/oauth2-applications")
    assert "/admin/login" in p.url
    p.screenshot(path=str(shots / "sign-in.png"))
    p.fill("#username", "admin")
    p.fill("#password", "not the password")
    p.click("button[type=submit]")
    assert "Wrong username or password" in p.inner_text("main")
    context.close()


def test_bizagi_style_setup_then_disable_and_rotate(
    page: Page, server: ServerProcess, shots: Path
) -> None:
    """Add a Bearer-token app with API + USER SYNC, copy its secret, use it, disable, rotate."""
    page.goto(f"{server.root_url}/admin/security/oauth2-applications")
    page.click("text=Add")
    page.fill("#name", "Microsoft Entra ID")
    page.select_option("#grant", "bearer")
    assert page.is_checked("input[value='API']") and page.is_checked("input[value='USER SYNC']")
    assert page.input_value("#lifetime") == ""  # the grant's default; the guide says 0
    page.fill("#lifetime", "0")
    page.screenshot(path=str(shots / "oauth2-application-add.png"))
    page.click("text=Save")
    assert "you will not see it again" in page.inner_text("main")
    page.click("button.copy[data-copy=client_secret]")
    assert page.inner_text("button.copy[data-copy=client_secret]") == "Copied"
    secret = page.evaluate("navigator.clipboard.readText()")  # what the admin pastes into Entra
    assert secret == page.input_value("#client_secret") and len(secret) >= 40
    page.screenshot(path=str(shots / "oauth2-application-secret.png"))
    assert _scim(server, secret).status_code == 200

    page.click("text=Back to Microsoft Entra ID")
    page.click("button:has-text('Disable')")  # one click broke Entra: it asks first
    assert _scim(server, secret).status_code == 200
    page.check("text=Clients using it stop working")
    page.click("button:has-text('Disable')")
    assert "disabled" in page.inner_text("main")
    assert _scim(server, secret).status_code == 401
    page.click("button:has-text('Enable')")
    assert _scim(server, secret).status_code == 200

    page.click("button:has-text('Rotate secret')")
    new_secret = page.input_value("#client_secret")
    assert new_secret != secret
    assert _scim(server, secret).status_code == 200
    assert _scim(server, new_secret).status_code == 200
    page.click("text=Back to Microsoft Entra ID")
    page.locator("button[aria-label^='Revoke secret']").first.click()  # the old one
    assert "Secret revoked" in page.inner_text("main")
    assert _scim(server, secret).status_code == 401
    assert _scim(server, new_secret).status_code == 200
    last = page.locator("button[aria-label^='Revoke secret']")
    assert last.count() == 1  # the last active secret asks first
    last.click()
    assert _scim(server, new_secret).status_code == 200
    page.goto(f"{server.root_url}/admin/security/oauth2-applications")
    assert "Microsoft Entra ID" in page.inner_text("table")
    assert secret not in page.content() and new_secret not in page.content()
    page.screenshot(path=str(shots / "oauth2-applications.png"))


def _token(server: ServerProcess, page: Page) -> str:
    """A fresh bearer secret made on the page (as the admin would)."""
    page.goto(f"{server.root_url}/admin/security/oauth2-applications/add")
    page.fill("#name", f"Provisioning client {uuid.uuid4().hex[:6]}")  # names are unique
    page.click("text=Save")
    return page.input_value("#client_secret")


def _property_names(server: ServerProcess, token: str) -> list[str]:
    """The custom properties /Schemas lists (none: the extension is not listed at all)."""
    r = _scim(server, token, f"/Schemas/{PROPS}")
    if r.status_code == 404:
        return []
    assert r.status_code == 200, r.text
    return [a["name"] for a in r.json()["attributes"]]


def _add_property(page: Page, server: ServerProcess, name: str, description: str) -> None:
    page.goto(f"{server.root_url}/admin/properties")
    page.fill("#name", name)
    page.select_option("#type", "String")
    page.fill("#description", description)
    page.click("button:has-text('Add property')")
    assert f"{PROPS}:{name}" in page.inner_text("main")


def test_custom_property_appears_in_schemas(page: Page, server: ServerProcess, shots: Path) -> None:
    """A property defined on the page is in /Schemas at once; unsupported types aren't offered.

    The server is shared by this module's tests, which run in any order and on any worker:
    what another test defined may be there before, and only this one is added."""
    token = _token(server, page)
    before = _property_names(server, token)
    assert "IdentificationNumber" not in before
    page.goto(f"{server.root_url}/admin/properties")
    offered = page.eval_on_selector_all("#type option", "os => os.map(o => o.value)")
    assert offered == ["String", "Integer", "Decimal", "Boolean", "DateTime", "Date"]
    _add_property(page, server, "IdentificationNumber", "National id, mapped from Entra")
    page.screenshot(path=str(shots / "custom-properties.png"), full_page=True)
    assert sorted(_property_names(server, token)) == sorted([*before, "IdentificationNumber"])


def test_user_created_over_scim_has_audit_history(
    page: Page, server: ServerProcess, shots: Path
) -> None:
    """A user provisioned over SCIM is found by search, with its attributes and history.

    It defines the custom property it sends itself: it failed when run alone or on another
    worker than the test that defined IdentificationNumber (a 400 for an undefined property)."""
    token = _token(server, page)
    _add_property(page, server, "EmployeeBadge", "Badge number")
    h = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    body = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "ada.lovelace@example.com",
        "name": {"givenName": "Ada", "familyName": "Lovelace", "formatted": "Ada Lovelace"},
        "emails": [{"type": "work", "value": "ada.lovelace@example.com", "primary": True}],
        "phoneNumbers": [{"type": "mobile", "value": "+44 7700900123"}],
        "active": True,
        PROPS: {"EmployeeBadge": "1815"},
    }
    r = httpx.post(f"{server.scim_url}/Users", json=body, headers=h, timeout=10)
    assert r.status_code == 201, r.text
    uid = r.json()["id"]
    patch = {"Operations": [{"op": "Replace", "path": "active", "value": "False"}]}
    assert (
        httpx.patch(f"{server.scim_url}/Users/{uid}", json=patch, headers=h, timeout=10).status_code
        == 200
    )
    g = httpx.post(
        f"{server.scim_url}/Groups",
        headers=h,
        timeout=10,
        json={"displayName": "Analysts", "members": [{"value": uid}]},
    )
    assert g.status_code == 201

    page.goto(f"{server.root_url}/admin/users")
    page.fill("#q", "lovelace")
    page.click("button:has-text('Search')")
    assert "ada.lovelace@example.com" in page.inner_text("table")
    assert "disabled" in page.inner_text("table")
    page.screenshot(path=str(shots / "users.png"))
    page.click("text=ada.lovelace@example.com")
    main = page.inner_text("main")
    assert "1815" in main and "Analysts" in main and "+44 7700900123" in main
    assert "Provisioning client" in main and "patch" in main and "create" in main
    page.screenshot(path=str(shots / "user.png"), full_page=True)

    page.goto(f"{server.root_url}/admin/groups")
    assert "Analysts" in page.inner_text("table")
    page.screenshot(path=str(shots / "groups.png"))
    page.goto(f"{server.root_url}/admin/audit")
    assert "Provisioning client" in page.inner_text("main")
    page.screenshot(path=str(shots / "audit-log.png"))


def test_connection_page_tests_the_token(page: Page, server: ServerProcess, shots: Path) -> None:
    """The SCIM connection page shows the Tenant URL and runs Entra's Test Connection."""
    token = _token(server, page)
    page.goto(f"{server.root_url}/admin/connection")
    assert page.input_value("#tenant_url") == f"{server.scim_url}/"
    page.fill("#token", "not-a-valid-token")
    page.click("button:has-text('Test connection')")
    assert "401" in page.inner_text("main")
    page.fill("#token", token)
    page.click("button:has-text('Test connection')")
    main = page.inner_text("main")
    assert "200" in main and token not in page.content()
    page.screenshot(path=str(shots / "scim-connection.png"), full_page=True)


def test_long_values_wrap_instead_of_widening_the_page(
    page: Page, server: ServerProcess, shots: Path
) -> None:
    """A 5,000-character displayName made a user's page ~8,000 px wide."""
    token = _token(server, page)
    h = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    body = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "long.value@example.com",
        "displayName": "W" * 5000,
        "title": "T" * 3000,
    }
    r = httpx.post(f"{server.scim_url}/Users", json=body, headers=h, timeout=10)
    assert r.status_code == 201, r.text
    page.set_viewport_size({"width": 1200, "height": 800})
    for path in (f"/admin/users/{r.json()['id']}", "/admin/users?q=long.value"):
        page.goto(f"{server.root_url}{path}")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 1200, (path, width)
