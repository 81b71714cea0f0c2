"""The OAuth 2 token endpoint (RFC 6749 client credentials grant) and its tokens on /scim/v2."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from scimd.auth import apps
from scimd.settings import Settings
from scimd.store import audit
from scimd.store.engine import create_engine
from scimd.store.tables import access_tokens, applications, client_secrets
from scimd.store.tables import audit as audit_table
from scimd.web.app import create_app

TOKEN_URL = "/oauth2/server/token"
FORM = "application/x-www-form-urlencoded"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
BOTH = ["API", "USER SYNC"]
GRANT = "client_credentials"


class Server:
    def __init__(self, client: TestClient, engine: sa.Engine) -> None:
        self.client = client
        self.engine = engine

    def app(
        self,
        grant: str = "client_credentials",
        scopes: list[str] | None = None,
        lifetime: int = 3600,
        name: str = "Entra",
    ) -> tuple[str, str]:
        with self.engine.begin() as conn:
            row, secret = apps.create_app(
                conn, name, grant, scopes or BOTH, audit.CLI, lifetime=lifetime
            )
        return str(row["client_id"]), secret

    def token(self, body: str | bytes | dict[str, str], **headers: str) -> Any:
        content = urlencode(body) if isinstance(body, dict) else body
        return self.client.post(
            TOKEN_URL, content=content, headers={"Content-Type": FORM, **headers}
        )

    def post_auth(self, cid: str, secret: str, **extra: str) -> Any:
        return self.token(
            {"grant_type": "client_credentials", "client_id": cid, "client_secret": secret, **extra}
        )

    def basic_auth(self, cid: str, secret: str, **extra: str) -> Any:
        return self.token(
            {"grant_type": "client_credentials", **extra}, Authorization=basic(cid, secret)
        )

    def access_token(self, cid: str, secret: str, **extra: str) -> str:
        r = self.post_auth(cid, secret, **extra)
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def users(self, token: str) -> Any:
        return self.client.get("/scim/v2/Users", headers={"Authorization": f"Bearer {token}"})

    def sql(self, stmt: Any) -> Any:
        with self.engine.begin() as conn:
            return conn.execute(stmt)


def basic(cid: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    stack: list[tuple[TestClient, sa.Engine]] = []

    def make(**settings: Any) -> Server:
        engine = create_engine(f"sqlite:///{tmp_path / f'x{len(stack)}.db'}")
        client = TestClient(create_app(Settings(**settings), engine))
        client.__enter__()
        stack.append((client, engine))
        return Server(client, engine)

    yield make
    for client, engine in stack:
        client.__exit__(None, None, None)
        engine.dispose()


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server()


def oauth_error(r: Any, status: int, error: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["pragma"] == "no-cache"
    body = r.json()
    assert body["error"] == error, body
    assert body["error_description"]
    if status == 401:
        assert r.headers["www-authenticate"] == 'Basic realm="scimd"'
    return dict(body)


# -- success ------------------------------------------------------------------------------------


def test_post_auth_issues_bearer_token(server: Server) -> None:
    """client_secret_post yields a §5.1 response: Bearer token, expires_in, scope, no refresh."""
    cid, secret = server.app()
    r = server.post_auth(cid, secret)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "API USER SYNC"
    assert len(base64.urlsafe_b64decode(body["access_token"] + "=")) == 32


def test_success_is_never_cached(server: Server) -> None:
    """A token response carries Cache-Control: no-store and Pragma: no-cache (RFC 6749 §5.1)."""
    cid, secret = server.app()
    r = server.post_auth(cid, secret)
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["pragma"] == "no-cache"


def test_basic_auth_issues_token(server: Server) -> None:
    """client_secret_basic yields a token that lists users on /scim/v2."""
    cid, secret = server.app()
    r = server.basic_auth(cid, secret)
    assert r.status_code == 200, r.text
    assert server.users(r.json()["access_token"]).status_code == 200


def test_basic_credentials_are_form_urlencoded(server: Server) -> None:
    """Basic id and secret are form-urlencoded (RFC 6749 §2.3.1) and decoded before checking."""
    cid, secret = server.app()
    encoded_id = "".join(f"%{b:02X}" for b in cid.encode())
    encoded_secret = "".join(f"%{b:02x}" for b in secret.encode())
    r = server.basic_auth(encoded_id, encoded_secret)
    assert r.status_code == 200, r.text


def test_two_authorization_headers_are_invalid_request(server: Server) -> None:
    """Two Authorization headers name two clients at once (or a good and a bad secret):
    refused as malformed, whichever comes first, and on the SCIM API too, where a write with
    two tokens was authorised, and audited, as the application of the last one."""
    cid, secret = server.app()
    other_id, other = server.app(grant="bearer", lifetime=0, name="other")
    _, bearer = server.app(grant="bearer", lifetime=0, name="third")
    form = urlencode({"grant_type": "client_credentials"})
    for pair in ((basic(cid, secret), basic(cid, "wrong")), (basic(cid, "no"), basic(cid, secret))):
        headers = [("Content-Type", FORM), ("Authorization", pair[0]), ("Authorization", pair[1])]
        r = server.client.post(TOKEN_URL, content=form, headers=headers)
        assert "repeat" not in oauth_error(r, 400, "invalid_request")
    body = {"schemas": [USER], "userName": "two-tokens"}
    headers = [("Authorization", f"Bearer {other}"), ("Authorization", f"Bearer {bearer}")]
    r = server.client.post("/scim/v2/Users", json=body, headers=headers)
    assert r.status_code == 400 and r.json()["scimType"] == "invalidSyntax"
    assert "2 authorization headers" in r.json()["detail"]
    written = sa.select(audit_table.c.resource_type).where(audit_table.c.actor == other_id)
    assert server.sql(written).all() == []
    r = server.client.get("/scim/v2/Users", headers={"Authorization": f"Bearer {other}"})
    assert r.json()["totalResults"] == 0


def test_basic_client_id_may_be_repeated_in_form(server: Server) -> None:
    """A client_id form field equal to the Basic user is accepted alongside Basic auth."""
    cid, secret = server.app()
    r = server.basic_auth(cid, secret, client_id=cid)
    assert r.status_code == 200, r.text


def test_token_works_on_scim_api(server: Server) -> None:
    """The access token creates and reads users on /scim/v2."""
    cid, secret = server.app()
    token = server.access_token(cid, secret)
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    body = json.dumps({"schemas": [USER], "userName": "ada@example.com"})
    r = server.client.post("/scim/v2/Users", content=body, headers=auth)
    assert r.status_code == 201, r.text
    r = server.users(token)
    assert r.status_code == 200 and r.json()["totalResults"] == 1


def test_client_secret_is_not_a_bearer_token(server: Server) -> None:
    """A client credentials application's secret itself is refused on /scim/v2."""
    _, secret = server.app()
    assert server.users(secret).status_code == 401


def test_trailing_slash_is_tolerated(server: Server) -> None:
    """POST /oauth2/server/token/ reaches the endpoint too (path normalisation)."""
    cid, secret = server.app()
    r = server.client.post(
        TOKEN_URL + "/",
        content=urlencode(
            {"grant_type": "client_credentials", "client_id": cid, "client_secret": secret}
        ),
        headers={"Content-Type": f"{FORM}; charset=UTF-8"},
    )
    assert r.status_code == 200, r.text


def test_get_is_not_allowed(server: Server) -> None:
    """Only POST is routed to the token endpoint."""
    assert server.client.get(TOKEN_URL).status_code == 405


# -- scopes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "granted"),
    [
        ("API", "API"),
        ("USER SYNC", "USER SYNC"),
        ("API USER SYNC", "API USER SYNC"),
        ("USER SYNC API", "API USER SYNC"),
        ("USER_SYNC", "USER SYNC"),
        ("user sync", "USER SYNC"),
        ("  api   User_Sync ", "API USER SYNC"),
        ("API API", "API"),
        ("", "API USER SYNC"),
        ("   ", "API USER SYNC"),
        ("_", "API USER SYNC"),
    ],
)
def test_scope_parsing(server: Server, requested: str, granted: str) -> None:
    """Scope strings as Bizagi and Entra send them parse to canonical names; blank means all."""
    cid, secret = server.app()
    r = server.post_auth(cid, secret, scope=requested)
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == granted
    token = r.json()["access_token"]
    with server.engine.connect() as conn:
        stored: list[str] = conn.execute(
            sa.select(access_tokens.c.scopes).where(
                access_tokens.c.digest == hashlib.sha256(token.encode()).hexdigest()
            )
        ).scalar_one()
    assert " ".join(stored) == granted


def test_api_only_token_is_forbidden_on_users(server: Server) -> None:
    """A token granted only API gets 403 on /scim/v2/Users, naming the missing USER SYNC scope."""
    cid, secret = server.app()
    r = server.post_auth(cid, secret, scope="API")
    r = server.users(r.json()["access_token"])
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["schemas"] == [ERROR]
    assert "USER SYNC" in body["detail"]


@pytest.mark.parametrize("scope", ["ADMIN", "USER", "SYNC", "API USER", "API,USER SYNC", "*"])
def test_unknown_scope_is_invalid_scope(server: Server, scope: str) -> None:
    """A scope string with a word that is not a scope name is invalid_scope (400)."""
    cid, secret = server.app()
    oauth_error(server.post_auth(cid, secret, scope=scope), 400, "invalid_scope")


def test_an_unknown_scope_is_named_as_written(server: Server) -> None:
    """From an audit: ``scope=nonsense`` was told "unknown scope at 'NONSENSE'"."""
    cid, secret = server.app()
    body = oauth_error(server.post_auth(cid, secret, scope="API user.sync"), 400, "invalid_scope")
    assert "'user.sync' is not a scope" in body["error_description"], body


def test_scope_beyond_the_apps_is_invalid_scope(server: Server) -> None:
    """Asking for a scope the application lacks is invalid_scope; its own scopes still work."""
    cid, secret = server.app(scopes=["API"])
    body = oauth_error(server.post_auth(cid, secret, scope="API USER SYNC"), 400, "invalid_scope")
    assert "USER SYNC" in body["error_description"]
    r = server.post_auth(cid, secret)
    assert r.status_code == 200 and r.json()["scope"] == "API"


# -- invalid_request ----------------------------------------------------------------------------


def test_missing_grant_type_is_invalid_request(server: Server) -> None:
    """A request without grant_type is invalid_request."""
    cid, secret = server.app()
    r = server.token({"client_id": cid, "client_secret": secret})
    oauth_error(r, 400, "invalid_request")


def test_empty_grant_type_counts_as_missing(server: Server) -> None:
    """An empty grant_type is treated as omitted (RFC 6749 §3.2): invalid_request."""
    cid, secret = server.app()
    r = server.token(f"grant_type=&client_id={cid}&client_secret={secret}")
    oauth_error(r, 400, "invalid_request")


@pytest.mark.parametrize("param", ["grant_type", "client_id", "client_secret", "scope"])
def test_duplicate_parameter_is_invalid_request(server: Server, param: str) -> None:
    """Any parameter sent twice is invalid_request (RFC 6749 §3.2)."""
    cid, secret = server.app()
    values = {
        "grant_type": "client_credentials",
        "client_id": cid,
        "client_secret": secret,
        "scope": "API",
    }
    body = urlencode(values) + "&" + urlencode({param: values[param]})
    oauth_error(server.token(body), 400, "invalid_request")


def test_the_same_credentials_in_header_and_body_are_accepted(server: Server) -> None:
    """Entra ID's "How credentials are sent: Both" (facts §5.2): Basic auth and the same
    client_id and client_secret in the form obtain a token (it was an invalid_request);
    a form secret that differs from the Basic one is still refused."""
    cid, secret = server.app()
    r = server.token(
        {"grant_type": "client_credentials", "client_id": cid, "client_secret": secret},
        Authorization=basic(cid, secret),
    )
    assert r.status_code == 200, r.text
    assert r.json()["access_token"]
    r = server.token(
        {"grant_type": "client_credentials", "client_id": cid, "client_secret": secret + "x"},
        Authorization=basic(cid, secret),
    )
    oauth_error(r, 400, "invalid_request")
    r = server.token(
        {"grant_type": "client_credentials", "client_secret": secret},
        Authorization=basic(cid, secret + "x"),
    )
    oauth_error(r, 400, "invalid_request")


def test_form_client_id_differing_from_basic_is_invalid_request(server: Server) -> None:
    """A client_id form field that differs from the Basic user is invalid_request."""
    cid, secret = server.app()
    oauth_error(server.basic_auth(cid, secret, client_id="other"), 400, "invalid_request")


@pytest.mark.parametrize(
    "ctype", ["application/json", "multipart/form-data; boundary=x", "text/plain", None]
)
def test_unsupported_content_type_is_invalid_request(server: Server, ctype: str | None) -> None:
    """A body that is not application/x-www-form-urlencoded is invalid_request."""
    cid, secret = server.app()
    headers = {"Content-Type": ctype} if ctype else {}
    body = json.dumps(
        {"grant_type": "client_credentials", "client_id": cid, "client_secret": secret}
    )
    r = server.client.post(TOKEN_URL, content=body, headers=headers)
    oauth_error(r, 400, "invalid_request")


def test_non_utf8_body_is_invalid_request(server: Server) -> None:
    """A form whose percent-decoded bytes are not UTF-8 is invalid_request."""
    cid, secret = server.app()
    body = f"grant_type=client_credentials&client_id={cid}&client_secret={secret}&scope=%FF"
    oauth_error(server.token(body), 400, "invalid_request")


def test_oversized_body_is_413(server: Server) -> None:
    """A body past 16 KiB is refused with 413 and a JSON error."""
    cid, secret = server.app()
    r = server.post_auth(cid, secret, scope="API " * 5000)
    oauth_error(r, 413, "invalid_request")


@pytest.mark.parametrize(
    "ctype",
    ["Application/X-WWW-Form-Urlencoded", "application/x-www-form-urlencoded; charset=UTF-8"],
)
def test_a_form_type_in_another_case_or_with_a_charset_is_a_form(
    server: Server, ctype: str
) -> None:
    """Media types are case-insensitive and may carry parameters (RFC 9110 §8.3.1): a client
    labelling its form so gets its token, not an invalid_request."""
    cid, secret = server.app()
    body = urlencode({"grant_type": GRANT, "client_id": cid, "client_secret": secret})
    r = server.client.post(TOKEN_URL, content=body, headers={"Content-Type": ctype})
    assert r.status_code == 200, r.text


def test_a_body_of_exactly_the_maximum_is_read(server: Server) -> None:
    """The cap is the largest body taken: 16 KiB exactly is read, one byte more is a 413."""
    from scimd.web.oauth import MAX_BODY

    cid, secret = server.app()
    form = urlencode({"grant_type": GRANT, "client_id": cid, "client_secret": secret})
    pad = "&pad="
    body = form + pad + "x" * (MAX_BODY - len(form) - len(pad))
    assert len(body) == MAX_BODY
    assert server.token(body).status_code == 200
    oauth_error(server.token(body + "x"), 413, "invalid_request")


def test_a_form_of_more_than_64_fields_is_invalid_request(server: Server) -> None:
    """The field count is bounded (a small body of many empty-named pairs costs a dict entry
    each): 65 fields are an invalid_request that says so."""
    cid, secret = server.app()
    fields = {"grant_type": GRANT, "client_id": cid, "client_secret": secret}
    fields |= {f"x{i}": "1" for i in range(65 - len(fields))}
    r = oauth_error(server.token(fields), 400, "invalid_request")
    assert "64 fields" in r["error_description"]


@pytest.mark.parametrize("param", ["client_id", "client_secret", "scope"])
def test_a_nul_character_in_a_value_is_invalid_request(server: Server, param: str) -> None:
    """No parameter holds U+0000 (PostgreSQL cannot take one as a parameter): a value with
    one is an invalid_request naming it, not a client authentication failure."""
    cid, secret = server.app()
    fields = {"grant_type": GRANT, "client_id": cid, "client_secret": secret, "scope": "API"}
    fields[param] += "\x00"
    r = oauth_error(server.token(fields), 400, "invalid_request")
    assert "NUL" in r["error_description"] and param in r["error_description"]


# -- unsupported_grant_type / unauthorized_client -------------------------------------------------


@pytest.mark.parametrize(
    "grant", ["password", "authorization_code", "refresh_token", "CLIENT_CREDENTIALS", "bearer"]
)
def test_other_grant_is_unsupported_grant_type(server: Server, grant: str) -> None:
    """Any grant_type other than client_credentials (case-sensitive) is unsupported_grant_type."""
    cid, secret = server.app()
    r = server.token({"grant_type": grant, "client_id": cid, "client_secret": secret})
    oauth_error(r, 400, "unsupported_grant_type")


def test_bearer_app_is_unauthorized_client(server: Server) -> None:
    """A bearer-token application that authenticates correctly is unauthorized_client (400)."""
    cid, secret = server.app(grant="bearer", lifetime=0)
    oauth_error(server.post_auth(cid, secret), 400, "unauthorized_client")
    oauth_error(server.basic_auth(cid, secret), 400, "unauthorized_client")


def test_bearer_app_with_wrong_secret_is_invalid_client(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """A bearer-token application with a wrong secret is invalid_client, not unauthorized;
    the log names the client id tried and the address (never the secret)."""
    cid, _ = server.app(grant="bearer", lifetime=0)
    oauth_error(server.post_auth(cid, "wrong"), 401, "invalid_client")
    [record] = [r for r in caplog.records if r.getMessage().startswith("token request refused")]
    assert record.fields == {"client_id": cid, "client": "testclient"}  # type: ignore[attr-defined]


# -- invalid_client -----------------------------------------------------------------------------


def test_client_auth_failures_are_indistinguishable(server: Server) -> None:
    """Unknown id, wrong secret, revoked secret and disabled app get the same 401 body."""
    cid, secret = server.app()
    other_id, other_secret = server.app(name="other")
    revoked_id, revoked_secret = server.app(name="revoked")
    with server.engine.begin() as conn:
        apps.set_enabled(conn, other_id, False, audit.CLI)
        conn.execute(
            client_secrets.update()
            .where(client_secrets.c.digest == apps.digest(revoked_secret))
            .values(revoked="2020-01-01T00:00:00.000Z")
        )
    bodies = [
        oauth_error(server.post_auth("no-such-client", secret), 401, "invalid_client"),
        oauth_error(server.post_auth(cid, secret + "x"), 401, "invalid_client"),
        oauth_error(server.post_auth(revoked_id, revoked_secret), 401, "invalid_client"),
        oauth_error(server.post_auth(other_id, other_secret), 401, "invalid_client"),
        oauth_error(server.basic_auth(cid, "wrong"), 401, "invalid_client"),
        oauth_error(server.basic_auth(revoked_id, revoked_secret), 401, "invalid_client"),
    ]
    assert all(b == bodies[0] for b in bodies)


def test_wrong_secret_via_basic_is_401_with_challenge(server: Server) -> None:
    """A wrong secret sent with Basic is invalid_client, 401, WWW-Authenticate: Basic."""
    cid, _ = server.app()
    oauth_error(server.basic_auth(cid, "nope"), 401, "invalid_client")


def test_secret_of_another_app_is_invalid_client(server: Server) -> None:
    """One application's secret does not authenticate another application's id."""
    cid, _ = server.app()
    _, other_secret = server.app(name="other")
    oauth_error(server.post_auth(cid, other_secret), 401, "invalid_client")


@pytest.mark.parametrize(
    "body",
    [
        {"grant_type": "client_credentials"},
        {"grant_type": "client_credentials", "client_id": "x"},
        {"grant_type": "client_credentials", "client_secret": "x"},
    ],
)
def test_no_client_auth_is_invalid_client(server: Server, body: dict[str, str]) -> None:
    """Without complete client credentials the answer is invalid_client (401)."""
    oauth_error(server.token(body), 401, "invalid_client")


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Basic " + base64.b64encode(b":secret").decode(),
        "Basic " + base64.b64encode(b"id:").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
        "Bearer sometoken",
        "Digest username=x",
    ],
)
def test_malformed_authorization_is_invalid_client(server: Server, authorization: str) -> None:
    """A malformed or non-Basic Authorization header is invalid_client with a Basic challenge."""
    r = server.token({"grant_type": "client_credentials"}, Authorization=authorization)
    oauth_error(r, 401, "invalid_client")


def test_scim_api_takes_basic_credentials_of_a_bearer_application(
    make_server: Callable[..., Server],
) -> None:
    """Okta's "Basic Auth" option sends the client id and secret as HTTP Basic: the secret is
    the application's bearer token, and the id must be its application's. A write is audited
    as that application; a wrong id, a wrong or revoked secret is a 401 that counts as a
    failure; a malformed Basic header is a 401 that says how to send it, and does not."""
    server = make_server(auth_failures_per_minute=4)
    cid, secret = server.app(grant="bearer", lifetime=0)
    other_id, _ = server.app(grant="bearer", lifetime=0, name="other")
    body = {"schemas": [USER], "userName": "basic@x.example"}
    r = server.client.post(
        "/scim/v2/Users", json=body, headers={"Authorization": basic(cid, secret)}
    )
    assert r.status_code == 201, r.text
    who = sa.select(audit_table.c.actor).where(audit_table.c.resource_id == r.json()["id"])
    assert server.sql(who).scalar_one() == cid
    for header in (basic(other_id, secret), basic(cid, secret + "x"), basic("ünï", secret)):
        r = server.client.get("/scim/v2/Users", headers={"Authorization": header})
        assert r.status_code == 401 and "client id and secret" in r.json()["detail"]
        assert r.headers["www-authenticate"].startswith("Bearer")
    colonless = "Basic " + base64.b64encode(cid.encode()).decode()
    for header in ("Basic !!", colonless, "Basic " + base64.b64encode(b":x").decode()):
        r = server.client.get("/scim/v2/Users", headers={"Authorization": header})
        assert r.status_code == 401 and "client_id:client_secret" in r.json()["detail"]
    unpadded = basic(cid, secret).rstrip("=")
    r = server.client.get("/scim/v2/Users", headers={"Authorization": unpadded})
    assert r.status_code == 200
    # The three wrong pairs above were failures; one more fills the limit of 4, the next is 429.
    statuses = [
        server.client.get("/scim/v2/Users", headers={"Authorization": basic(cid, "x")}).status_code
        for _ in range(2)
    ]
    assert statuses == [401, 429]
    other = make_server()  # a revoked application's pair, from an address not yet limited
    oid, osecret = other.app(grant="bearer", lifetime=0)
    with other.engine.begin() as conn:
        apps.revoke_app(conn, oid, audit.CLI)
    r = other.client.get("/scim/v2/Users", headers={"Authorization": basic(oid, osecret)})
    assert r.status_code == 401


# -- secret lifecycle ---------------------------------------------------------------------------


def test_rotation_keeps_both_secrets_working(server: Server) -> None:
    """After rotation the old and the new secret both obtain tokens until the old is revoked."""
    cid, old = server.app()
    with server.engine.begin() as conn:
        new = apps.rotate_secret(conn, cid, audit.CLI)
    assert server.users(server.access_token(cid, old)).status_code == 200
    assert server.users(server.access_token(cid, new)).status_code == 200
    server.sql(
        client_secrets.update()
        .where(client_secrets.c.digest == apps.digest(old))
        .values(revoked="2020-01-01T00:00:00.000Z")
    )
    oauth_error(server.post_auth(cid, old), 401, "invalid_client")
    assert server.users(server.access_token(cid, new)).status_code == 200


def test_each_secret_says_when_it_was_last_used(server: Server) -> None:
    """Only the application said when it was used, not with which secret: during a rotation
    nothing showed that the clients had moved to the new one. Each secret says so now, for a
    bearer secret used as the token and for tokens a client-credentials secret obtained."""

    def secrets(cid: str) -> list[Any]:
        with server.engine.connect() as conn:
            return [s["last_used"] for s in apps.get_app(conn, cid)["secrets"]]

    for grant, lifetime in (("bearer", 0), ("client_credentials", 3600)):
        cid, _ = server.app(grant=grant, name=f"rotated {grant}", lifetime=lifetime)
        with server.engine.begin() as conn:
            new = apps.rotate_secret(conn, cid, audit.CLI)
        assert secrets(cid) == [None, None]
        token = new if grant == "bearer" else server.access_token(cid, new)
        assert server.users(token).status_code == 200
        old_used, new_used = secrets(cid)
        assert old_used is None and new_used is not None  # the clients moved to the new one


def test_last_used_is_written_on_a_host_up_for_less_than_a_minute(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The once-a-minute bookkeeping compared the monotonic clock (seconds since the host
    booted) with 0 for an application not seen yet: during a host's first minute, as a
    freshly started container or VM has, no use was recorded."""
    import types

    import scimd.web.scim as scim_module

    # The SCIM layer's clock only (the token cache keeps its own): the host is up for 30 s.
    monkeypatch.setattr(scim_module, "time", types.SimpleNamespace(monotonic=lambda: 30.0))
    cid, token = server.app(grant="bearer", name="early riser", lifetime=0)
    assert server.users(token).status_code == 200
    with server.engine.connect() as conn:
        got = apps.get_app(conn, cid)
    assert got["last_used"] is not None
    assert [s["last_used"] is not None for s in got["secrets"]] == [True]


def test_revoking_a_secret_ends_the_tokens_already_issued(server: Server) -> None:
    """A revoked (say, leaked) secret lived on in the access tokens it had issued; now they
    end with it, while the tokens of the new secret, which the clients already switched to,
    keep working: the rotation promises no downtime."""
    cid, old = server.app()
    with server.engine.begin() as conn:
        new = apps.rotate_secret(conn, cid, audit.CLI)
    issued = server.access_token(cid, old)
    of_new = server.access_token(cid, new)
    assert server.users(issued).status_code == 200
    secret_pk = server.sql(
        sa.select(client_secrets.c.pk).where(client_secrets.c.digest == apps.digest(old))
    ).scalar_one()
    with server.engine.begin() as conn:
        apps.revoke_secret(conn, cid, secret_pk, audit.CLI)
    assert server.users(issued).status_code == 401
    assert server.users(of_new).status_code == 200
    oauth_error(server.post_auth(cid, old), 401, "invalid_client")
    assert server.users(server.access_token(cid, new)).status_code == 200


def test_revoking_a_secret_ends_tokens_from_before_secrets_were_recorded(server: Server) -> None:
    """A token issued before migration 0005 does not say which secret obtained it: it ends
    with any revoked secret of its application."""
    cid, old = server.app()
    with server.engine.begin() as conn:
        new = apps.rotate_secret(conn, cid, audit.CLI)
    legacy = server.access_token(cid, new)  # obtained by the new secret, but not recorded
    server.sql(
        access_tokens.update()
        .where(access_tokens.c.digest == apps.digest(legacy))
        .values(secret_pk=None)
    )
    secret_pk = server.sql(
        sa.select(client_secrets.c.pk).where(client_secrets.c.digest == apps.digest(old))
    ).scalar_one()
    assert server.users(legacy).status_code == 200
    with server.engine.begin() as conn:
        apps.revoke_secret(conn, cid, secret_pk, audit.CLI)
    assert server.users(legacy).status_code == 401


def test_disable_kills_tokens_at_once(server: Server) -> None:
    """Disabling the application refuses its tokens and new grants; re-enabling grants again."""
    cid, secret = server.app()
    token = server.access_token(cid, secret)
    assert server.users(token).status_code == 200
    with server.engine.begin() as conn:
        apps.set_enabled(conn, cid, False, audit.CLI)
    assert server.users(token).status_code == 401
    oauth_error(server.post_auth(cid, secret), 401, "invalid_client")
    with server.engine.begin() as conn:
        apps.set_enabled(conn, cid, True, audit.CLI)
    assert server.users(server.access_token(cid, secret)).status_code == 200


def test_revoke_kills_tokens_at_once(server: Server) -> None:
    """Revoking the application refuses its tokens and its secrets at once."""
    cid, secret = server.app()
    token = server.access_token(cid, secret)
    with server.engine.begin() as conn:
        apps.revoke_app(conn, cid, audit.CLI)
    assert server.users(token).status_code == 401
    oauth_error(server.post_auth(cid, secret), 401, "invalid_client")
    with server.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(access_tokens)).scalar() == 0


def test_delete_kills_tokens_at_once(server: Server) -> None:
    """Deleting the application refuses its tokens and its client id at once."""
    cid, secret = server.app()
    token = server.access_token(cid, secret)
    with server.engine.begin() as conn:
        apps.delete_app(conn, cid, audit.CLI)
    assert server.users(token).status_code == 401
    oauth_error(server.post_auth(cid, secret), 401, "invalid_client")


# -- lifetime -----------------------------------------------------------------------------------


def test_a_token_lives_at_least_as_long_as_expires_in_says(server: Server) -> None:
    """Its expiry was counted from the whole second it was issued in: a token lived up to a
    second less than ``expires_in`` said, and a one-second token could end before its first
    use (a slow CI run saw it)."""
    cid, secret = server.app(lifetime=5)
    before = time.time()
    r = server.post_auth(cid, secret)
    assert r.json()["expires_in"] == 5
    token = r.json()["access_token"]
    with server.engine.connect() as conn:
        expires = conn.execute(
            sa.select(access_tokens.c.expires).where(access_tokens.c.digest == apps.digest(token))
        ).scalar_one()
    assert expires >= before + 5


def test_expired_token_is_refused(server: Server) -> None:
    """A token past its expiry is refused; time is moved by rewriting its expires column.

    The token is first used after the rewrite: a token already verified is cached with its
    expiry, which ``test_cached_token_expires`` covers with a clock of its own.
    """
    cid, secret = server.app(lifetime=1)
    r = server.post_auth(cid, secret)
    assert r.json()["expires_in"] == 1
    token = r.json()["access_token"]
    server.sql(
        access_tokens.update()
        .where(access_tokens.c.digest == apps.digest(token))
        .values(expires=access_tokens.c.expires - 3600)
    )
    r = server.users(token)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    # A new token works: with a lifetime a loaded machine cannot outrun (a one-second token
    # expires at the next whole second, which a slow request can pass).
    server.sql(
        applications.update().where(applications.c.client_id == cid).values(token_lifetime=3600)
    )
    fresh = server.post_auth(cid, secret).json()["access_token"]
    assert server.users(fresh).status_code == 200


def test_expired_tokens_are_purged_on_issue(server: Server) -> None:
    """Issuing a token deletes every expired token: only its own application's went, so an
    application that stopped asking kept its expired tokens for good."""
    cid, secret = server.app()
    other_id, other_secret = server.app(name="other")
    stale = server.access_token(cid, secret)
    other_stale = server.access_token(other_id, other_secret)
    server.sql(access_tokens.update().values(expires=1))
    fresh = server.access_token(cid, secret)
    with server.engine.connect() as conn:
        digests: set[str] = set(conn.execute(sa.select(access_tokens.c.digest)).scalars())
    assert digests == {apps.digest(fresh)}
    assert apps.digest(stale) not in digests and apps.digest(other_stale) not in digests


def test_lifetime_zero_never_expires(server: Server) -> None:
    """An application with lifetime 0 gets tokens without expires_in, stored with no expiry."""
    cid, secret = server.app(lifetime=0)
    r = server.post_auth(cid, secret)
    assert r.status_code == 200, r.text
    assert "expires_in" not in r.json()
    token = r.json()["access_token"]
    with server.engine.connect() as conn:
        expires: int | None = conn.execute(
            sa.select(access_tokens.c.expires).where(access_tokens.c.digest == apps.digest(token))
        ).scalar_one()
    assert expires is None
    assert server.users(token).status_code == 200


def test_token_row_holds_expiry(server: Server) -> None:
    """The stored expiry is the issue time, to the next whole second, plus the lifetime."""
    cid, secret = server.app(lifetime=3600)
    before = int(time.time())
    token = server.access_token(cid, secret)
    with server.engine.connect() as conn:
        expires: int | None = conn.execute(
            sa.select(access_tokens.c.expires).where(access_tokens.c.digest == apps.digest(token))
        ).scalar_one()
    assert expires is not None
    # From the second after the one it was issued in: never less than the lifetime.
    assert before + 3600 < expires <= int(time.time()) + 3601


# -- secrecy and audit --------------------------------------------------------------------------


def test_audit_names_app_never_secret_or_token(server: Server, tmp_path: Path) -> None:
    """token.issue is audited under the application; neither secret nor token is stored."""
    cid, secret = server.app()
    token = server.access_token(cid, secret, scope="USER SYNC")
    server.basic_auth(cid, "wrong-secret")
    with server.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(audit_table))]
    issued = [r for r in rows if r["operation"] == "token.issue"]
    assert len(issued) == 1
    assert issued[0]["actor_type"] == "app" and issued[0]["actor"] == cid
    assert issued[0]["resource_id"] == cid and issued[0]["actor_name"] == "Entra"
    assert issued[0]["request_id"]
    dumped = json.dumps(rows, default=str)
    for needle in (secret, token, "wrong-secret"):
        assert needle not in dumped
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("x0.db*"))
    assert secret.encode() not in raw and token.encode() not in raw


def test_the_audit_of_a_token_says_its_lifetime_or_that_it_never_expires(server: Server) -> None:
    """An operator reading ``token.issue`` records sees each token's lifetime in seconds, and
    none (null) for a token that never expires: a 0 there read as "expired at once"."""
    for lifetime in (3600, 0):
        cid, secret = server.app(name=f"life-{lifetime}", lifetime=lifetime)
        server.access_token(cid, secret)
        with server.engine.connect() as conn:
            detail = conn.execute(
                sa.select(audit_table.c.detail).where(
                    audit_table.c.operation == "token.issue", audit_table.c.actor == cid
                )
            ).scalar_one()
        detail = json.loads(detail) if isinstance(detail, str) else detail
        assert detail["expires_in"] == (lifetime or None)


# -- throttling ---------------------------------------------------------------------------------


def test_repeated_invalid_client_is_throttled(make_server: Callable[..., Server]) -> None:
    """Past the per-minute failure budget, a failure from the address is a 429 with
    Retry-After, here and on the SCIM API; valid credentials still get a token."""
    server = make_server(auth_failures_per_minute=3)
    cid, secret = server.app()
    for _ in range(3):  # the limit's worth of failures are 401s; the next is past it
        oauth_error(server.post_auth(cid, "wrong"), 401, "invalid_client")
    r = server.post_auth(cid, "wrong")
    oauth_error(r, 429, "temporarily_unavailable")
    assert 0 < int(r.headers["retry-after"]) <= 60
    assert server.users("anything").status_code == 429
    assert server.post_auth(cid, secret).status_code == 200


def test_failures_from_one_address_are_not_forgotten_when_another_fails() -> None:
    """The throttle counts each address apart: failures from a second address (a NAT's other
    client, or a guesser alternating addresses) leave the first one's count as it was."""
    from scimd.web.security import FailureThrottle, TooManyFailures

    throttle = FailureThrottle(2)
    for _ in range(2):
        throttle.failed("192.0.2.1")
    throttle.failed("192.0.2.2")
    with pytest.raises(TooManyFailures):
        throttle.failed("192.0.2.1")


def test_other_errors_are_not_throttled(make_server: Callable[..., Server]) -> None:
    """Only failed client authentications count toward the throttle."""
    server = make_server(auth_failures_per_minute=2)
    cid, secret = server.app()
    for _ in range(4):
        oauth_error(server.post_auth(cid, secret, scope="ADMIN"), 400, "invalid_scope")
        oauth_error(server.token({"client_id": cid}), 400, "invalid_request")
    assert server.post_auth(cid, secret).status_code == 200


def test_the_retry_after_of_a_throttled_token_request_is_the_wait_it_names(
    make_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on the SCIM API, a throttled token request's Retry-After is the seconds until the
    oldest failure leaves the minute, not a fixed 60."""
    import types

    from scimd.web import security

    now = [1000.0]
    monkeypatch.setattr(security, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    server = make_server(auth_failures_per_minute=2)
    cid, _ = server.app()
    for _ in range(2):
        oauth_error(server.post_auth(cid, "wrong"), 401, "invalid_client")
    now[0] += 20.5  # the first failure leaves the window in 39.5 s
    r = server.post_auth(cid, "wrong")
    oauth_error(r, 429, "temporarily_unavailable")
    assert r.headers["retry-after"] == "40"


def test_a_busy_write_queue_is_a_503_to_retry(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write the server cannot take now (its queue full, the database busy) is answered
    ``temporarily_unavailable`` with Retry-After, which a client retries; never a 500."""
    from scimd.scim.errors import ScimError
    from scimd.web import oauth

    def busy(*args: Any, **kwargs: Any) -> Any:
        raise ScimError("the server is busy: retry", status=503)

    monkeypatch.setattr(oauth, "issue_token", busy)
    cid, secret = server.app()
    r = server.post_auth(cid, secret)
    oauth_error(r, 503, "temporarily_unavailable")
    assert r.headers["retry-after"] == "5"


def test_the_basic_scheme_name_is_read_in_any_case(server: Server) -> None:
    """Authentication scheme names are case-insensitive (RFC 9110 §11.1): ``basic`` and
    ``BASIC`` authenticate as ``Basic`` does."""
    cid, secret = server.app()
    for scheme in ("basic", "BASIC"):
        header = basic(cid, secret).replace("Basic", scheme, 1)
        r = server.token({"grant_type": GRANT}, Authorization=header)
        assert r.status_code == 200, r.text


def test_a_nul_in_basic_credentials_is_invalid_client_on_postgresql(postgres_url: str) -> None:
    """PostgreSQL takes no U+0000 in a parameter: a percent-encoded NUL in a Basic client id
    is an invalid_client, not a 500 from the database."""
    engine, cid, secret = _postgres_cc_app(postgres_url)
    try:
        with TestClient(create_app(Settings(), engine)) as client:
            header = "Basic " + base64.b64encode(f"{cid}%00:{secret}".encode()).decode()
            r = client.post(
                TOKEN_URL,
                content=urlencode({"grant_type": GRANT}),
                headers={"Content-Type": FORM, "Authorization": header},
            )
        oauth_error(r, 401, "invalid_client")
    finally:
        engine.dispose()


def test_the_scim_api_reads_scheme_names_and_token_spacing_leniently(server: Server) -> None:
    """Scheme names are case-insensitive (RFC 9110 §11.1) and the space after one may be
    several: ``bearer``, ``BEARER  <token>`` and ``basic`` authenticate on /scim/v2."""
    cid, secret = server.app(grant="bearer", lifetime=0)
    for header in (
        f"bearer {secret}",
        f"BEARER  {secret}",
        basic(cid, secret).replace("Basic", "basic", 1),
    ):
        r = server.client.get("/scim/v2/Users", headers={"Authorization": header})
        assert r.status_code == 200, (header[:8], r.text)


def test_the_access_log_line_of_a_token_issued_names_the_application(tmp_path: Path) -> None:
    """An operator reading the access log sees which application each token went to (the
    ``app`` field, as on the SCIM API); a refused request names none."""
    import io

    engine = create_engine(f"sqlite:///{tmp_path / 'log.db'}")
    stream = io.BytesIO()
    with TestClient(create_app(Settings(), engine, log_stream=stream)) as client:
        server = Server(client, engine)
        cid, secret = server.app()
        assert server.post_auth(cid, secret).status_code == 200
        assert server.post_auth(cid, "wrong").status_code == 401
    engine.dispose()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(x["status"], x["app"]) for x in lines if x["path"] == TOKEN_URL] == [
        (200, cid),
        (401, None),
    ]


def test_a_bearer_scheme_without_a_token_is_told_how_to_send_one_and_not_throttled(
    make_server: Callable[..., Server],
) -> None:
    """``Authorization: Bearer`` with nothing after it is a client misconfigured, not a token
    guessed: a 401 that says how to send the header, with the plain challenge, and never a
    failure that counts toward the address's 429."""
    server = make_server(auth_failures_per_minute=1)
    for _ in range(3):
        r = server.client.get("/scim/v2/Users", headers={"Authorization": "Bearer"})
        assert r.status_code == 401, r.text
        assert "Bearer scheme" in r.json()["detail"]
        assert r.headers["www-authenticate"] == 'Bearer realm="scimd"'


def _postgres_cc_app(postgres_url: str) -> tuple[sa.Engine, str, str]:
    """An engine on a fresh PostgreSQL database, and a client-credentials application's
    client id and secret in it."""
    from scimd.store import migrate
    from scimd.store.engine import create_engine

    engine = create_engine(postgres_url)
    migrate.ensure_current(engine)
    with engine.begin() as conn:
        row, secret = apps.create_app(conn, "cc", "client_credentials", ["USER SYNC"], audit.CLI)
    return engine, str(row["client_id"]), secret


def test_a_token_asked_for_while_its_secret_is_revoked_does_not_outlive_it(
    postgres_url: str,
) -> None:
    """PostgreSQL: a token issued between a revocation's statements (its secret read as
    unrevoked, its row inserted after the revocation deleted the others) kept working, with
    no expiry. Issuing now waits for the revocation and then finds no secret."""
    import threading

    from scimd.auth import tokens

    engine, cid, secret = _postgres_cc_app(postgres_url)
    try:
        with engine.begin() as conn:
            secret_pk = conn.execute(
                sa.select(client_secrets.c.pk).where(client_secrets.c.digest == apps.digest(secret))
            ).scalar_one()
        outcome: list[str] = []

        def ask() -> None:
            try:
                with engine.begin() as conn:
                    tokens.issue_token(conn, cid, secret, None)
                outcome.append("issued")
            except tokens.TokenError as e:
                outcome.append(e.error)

        with engine.connect() as revoking:
            apps.revoke_secret(revoking, cid, secret_pk, audit.CLI)  # not committed yet
            asker = threading.Thread(target=ask)
            asker.start()
            asker.join(1.0)  # it waits for the revocation now; it used to finish at once
            revoking.commit()
        asker.join(30)
        with engine.connect() as conn:
            left = conn.execute(sa.select(sa.func.count()).select_from(access_tokens)).scalar_one()
    finally:
        engine.dispose()
    assert outcome == ["invalid_client"] and left == 0


def test_a_token_issued_while_its_application_is_disabled_does_not_come_back(
    postgres_url: str,
) -> None:
    """PostgreSQL: a token issued as the application was being disabled (its row read as
    enabled, its token inserted after the disable's delete) survived the disable, and worked
    again once the application was enabled. The disable now waits for it and deletes it."""
    import threading

    from scimd.auth import tokens

    engine, cid, secret = _postgres_cc_app(postgres_url)
    try:

        def disable() -> None:
            with engine.begin() as conn:
                apps.set_enabled(conn, cid, False, audit.CLI)

        with engine.connect() as issuing:
            issued = tokens.issue_token(issuing, cid, secret, None)  # not committed yet
            disabler = threading.Thread(target=disable)
            disabler.start()
            disabler.join(1.0)  # it waits for the token now; it used to finish at once
            issuing.commit()
        disabler.join(30)
        with engine.begin() as conn:
            assert apps.authenticate(conn, issued["access_token"]) is None
            apps.set_enabled(conn, cid, True, audit.CLI)
        with engine.connect() as conn:
            assert apps.authenticate(conn, issued["access_token"]) is None
    finally:
        engine.dispose()


@pytest.mark.parametrize("writer", ["revoke_app", "delete_app", "disable", "revoke_secret"])
def test_an_application_changed_during_a_token_request_does_not_deadlock(
    postgres_url: str, writer: str
) -> None:
    """PostgreSQL: a token request takes the application's row, then its secrets; a revoke or
    delete changed the secrets first, then the application, and deadlocked with a token
    request that came in between (5 of 6 `scimd apps revoke` under load). Every change of an
    application now locks its row first: the token request waits, then finds it revoked."""
    import threading

    from scimd.auth import tokens

    engine, cid, secret = _postgres_cc_app(postgres_url)
    outcome: dict[str, str] = {}

    def ask() -> None:
        try:
            with engine.begin() as conn:
                tokens.issue_token(conn, cid, secret, None)
            outcome["token"] = "issued"
        except tokens.TokenError as e:
            outcome["token"] = e.error
        except Exception as e:  # a deadlock, said as the database's error
            outcome["token"] = repr(e)

    def change(conn: sa.Connection) -> None:
        if writer == "revoke_app":
            apps.revoke_app(conn, cid, audit.CLI)
        elif writer == "delete_app":
            apps.delete_app(conn, cid, audit.CLI)
        elif writer == "disable":
            apps.set_enabled(conn, cid, False, audit.CLI)
        else:
            apps.revoke_secret(conn, cid, secret_pk, audit.CLI)

    try:
        with engine.connect() as conn:
            secret_pk = apps.get_app(conn, cid)["secrets"][0]["id"]
        with engine.connect() as conn:
            # The token request starts after the change's second statement, its first write
            # (the interleaving that deadlocked), and the change goes on once it waits.
            execute = conn.execute
            asker = threading.Thread(target=ask)
            run: list[int] = []

            def stepped(*args: Any, **kw: Any) -> Any:
                result = execute(*args, **kw)
                run.append(1)
                if len(run) == 2:
                    asker.start()
                    asker.join(1.0)  # a pause for it to take what it takes first
                return result

            conn.execute = stepped  # type: ignore[method-assign]
            with conn.begin():
                change(conn)
        asker.join(30)
    finally:
        engine.dispose()
    assert outcome["token"] == "invalid_client", outcome


def test_a_token_request_does_not_wait_for_another_applications_expired_tokens(
    postgres_url: str,
) -> None:
    """PostgreSQL: each token request deletes every application's expired tokens; those of an
    application being revoked or deleted (its transaction deleting them too) made the request
    wait for it, and the two could wait for each other. Rows another transaction holds are
    now left to a later request."""
    import threading

    from scimd.auth import tokens

    engine, cid, secret = _postgres_cc_app(postgres_url)
    try:
        with engine.begin() as conn:
            other, _ = apps.create_app(conn, "other", "client_credentials", ["API"], audit.CLI)
            other_pk = conn.execute(
                sa.select(applications.c.pk).where(applications.c.client_id == other["client_id"])
            ).scalar_one()
            conn.execute(
                access_tokens.insert().values(
                    app_pk=other_pk, digest="0" * 64, scopes=["API"], created="x", expires=1
                )
            )
        outcome: list[str] = []

        def ask() -> None:
            with engine.begin() as conn:
                outcome.append(tokens.issue_token(conn, cid, secret, None)["token_type"])

        with engine.connect() as holder:  # as a revoke or delete of the other application
            holder.execute(access_tokens.delete().where(access_tokens.c.app_pk == other_pk))
            asker = threading.Thread(target=ask)
            asker.start()
            asker.join(10)  # a bound for the test: it used to wait for the holder
            issued_meanwhile = list(outcome)
            holder.commit()
        asker.join(30)
    finally:
        engine.dispose()
    assert issued_meanwhile == ["Bearer"]


def test_client_credentials_tokens_expire_in_an_hour_unless_told_otherwise(server: Server) -> None:
    """Access tokens never expired unless a lifetime was given (RFC 9700 §2.2.2: short-lived);
    a Bearer token application's secret, the token Entra stores, still never expires."""
    with server.engine.begin() as conn:
        cc, cc_secret = apps.create_app(conn, "cc", "client_credentials", BOTH, audit.CLI)
        bearer, _ = apps.create_app(conn, "b", "bearer", BOTH, audit.CLI)
        forever, forever_secret = apps.create_app(
            conn, "f", "client_credentials", BOTH, audit.CLI, lifetime=0
        )
    assert (cc["token_lifetime"], bearer["token_lifetime"], forever["token_lifetime"]) == (
        3600,
        0,
        0,
    )
    r = server.post_auth(cc["client_id"], cc_secret)
    assert r.status_code == 200 and r.json()["expires_in"] == 3600
    r = server.post_auth(forever["client_id"], forever_secret)
    assert r.status_code == 200 and "expires_in" not in r.json()


def test_a_request_without_credentials_is_told_how_to_send_them(server: Server) -> None:
    """Nothing sent was answered "client authentication failed", which did not say what was
    missing. A wrong secret still gets the one answer that names no part."""
    body = oauth_error(server.token({"grant_type": "client_credentials"}), 401, "invalid_client")
    assert "HTTP Basic" in body["error_description"]
    assert "client_secret_post" in body["error_description"]
    cid, _ = server.app()
    wrong = oauth_error(server.post_auth(cid, "not-the-secret"), 401, "invalid_client")
    assert wrong["error_description"] == "client authentication failed"


def test_two_admins_adding_one_name_at_once_make_one_application(postgres_url: str) -> None:
    """On PostgreSQL both checks for the name ran before either insert committed (READ
    COMMITTED), and two applications of one name were made."""
    import threading

    from scimd.scim.errors import InvalidValue
    from scimd.store.engine import create_engine
    from scimd.store.migrate import ensure_current

    engine = create_engine(postgres_url)
    ensure_current(engine)
    created = threading.Event()
    outcome: list[str] = []

    def second() -> None:
        created.wait(30)
        try:
            with engine.begin() as conn:
                apps.create_app(conn, "entra id", "bearer", ["USER SYNC"], audit.CLI)
            outcome.append("created")
        except InvalidValue as e:
            outcome.append(f"refused {e.status}")

    other = threading.Thread(target=second)
    other.start()
    with engine.begin() as conn:
        apps.create_app(conn, "Entra ID", "bearer", ["USER SYNC"], audit.CLI)
        created.set()
        other.join(0.5)  # the other waits for this transaction's lock meanwhile
    other.join(30)
    with engine.connect() as conn:
        names = [a["name"] for a in apps.list_apps(conn)]
    engine.dispose()
    assert outcome == ["refused 409"] and names == ["Entra ID"]


def test_a_secret_typed_as_the_client_id_is_not_logged(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """Client id and secret swapped (Entra's two boxes): the refusal's log line held the
    secret, as the client id tried."""
    cid, secret = server.app()
    oauth_error(server.post_auth(secret, cid), 401, "invalid_client")
    [record] = [r for r in caplog.records if r.getMessage().startswith("token request refused")]
    fields = record.fields  # type: ignore[attr-defined]
    assert secret not in str(fields) and "not a client id" in fields["client_id"]


def test_an_application_holds_a_bounded_number_of_live_tokens(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every token request added a row that lived as long as the lifetime (forever at 0), and
    expired rows stayed unless their own application asked again: a client asking per request
    held tens of thousands of working credentials. Asking past the bound ends the oldest."""
    from scimd.auth import tokens

    monkeypatch.setattr(tokens, "MAX_LIVE_TOKENS", 3)
    short_id, short_secret = server.app(name="short", lifetime=1)
    expiring = server.access_token(short_id, short_secret)
    cid, secret = server.app(lifetime=0)
    issued = [server.access_token(cid, secret)]
    assert server.users(issued[0]).status_code == 200  # verified, and cached, before it ends
    issued += [server.access_token(cid, secret) for _ in range(4)]
    server.sql(  # the short application's token expires (its expiry moved an hour back)
        access_tokens.update()
        .where(access_tokens.c.digest == apps.digest(expiring))
        .values(expires=access_tokens.c.expires - 3600)
    )
    issued.append(server.access_token(cid, secret))
    with server.engine.connect() as conn:
        rows = conn.execute(sa.select(access_tokens.c.app_pk)).all()
    assert len(rows) == 3  # the newest three of one application; the expired one went too
    assert [server.users(t).status_code for t in issued] == [401, 401, 401, 200, 200, 200]
    assert server.users(expiring).status_code == 401


def test_the_bound_on_live_tokens_ends_only_the_asking_applications_own(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An application asking past the bound ends its own oldest tokens: another application's
    older token (a lower row number) keeps working."""
    from scimd.auth import tokens

    monkeypatch.setattr(tokens, "MAX_LIVE_TOKENS", 2)
    other_id, other_secret = server.app(name="okta", lifetime=0)
    other = server.access_token(other_id, other_secret)
    cid, secret = server.app(lifetime=0)
    issued = [server.access_token(cid, secret) for _ in range(3)]
    assert [server.users(t).status_code for t in issued] == [401, 200, 200]
    assert server.users(other).status_code == 200


def test_a_compressed_form_is_refused_as_such(server: Server) -> None:
    """A gzipped form was "not a valid form (UTF-8 ...)", and a plain one labelled gzip was
    taken: a Content-Encoding the endpoint does not decode is a 415 naming it."""
    import gzip

    cid, secret = server.app()
    body = f"grant_type=client_credentials&client_id={cid}&client_secret={secret}".encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": "gzip"}
    for content in (gzip.compress(body), body):
        r = server.client.post(TOKEN_URL, content=content, headers=headers)
        oauth_error(r, 415, "invalid_request")
        assert "gzip" in r.json()["error_description"]
    # Two lines are read as one list (RFC 9110 §5.3), not the first alone.
    two = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Content-Encoding", "identity"),
        ("Content-Encoding", "gzip"),
    ]
    r = server.client.post(TOKEN_URL, content=gzip.compress(body), headers=two)
    oauth_error(r, 415, "invalid_request")
