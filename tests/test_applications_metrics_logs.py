"""OAuth applications and what an operator reads in /metrics and the access log: the
behaviours a mutation audit of ``auth/apps.py`` and ``web/observability.py`` found untested."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import time
import types
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import generate_latest
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.testclient import TestClient

from scimd.auth import apps, tokens
from scimd.scim.errors import InvalidValue, NotFound
from scimd.settings import Settings
from scimd.store import audit, versions
from scimd.store.engine import create_engine
from scimd.store.tables import audit as audit_table
from scimd.web import observability, portal
from scimd.web.app import create_app
from scimd.web.oauth import TokenEndpoint
from scimd.web.observability import AccessLog, JsonFormatter, Metrics, Observer
from support.api import serving

CLI = audit.Actor("cli", "test")


@pytest.fixture
def engine(sqlite_engine: sa.Engine) -> sa.Engine:
    return sqlite_engine


def _app(
    engine: sa.Engine, name: str, grant: str = "bearer", lifetime: int | None = None
) -> tuple[str, str]:
    with engine.begin() as conn:
        row, secret = apps.create_app(conn, name, grant, ["USER SYNC"], CLI, lifetime)
    return str(row["client_id"]), secret


def _check(engine: sa.Engine, cache: apps.TokenCache, token: str) -> apps.Principal | None:
    with engine.connect() as conn:
        return cache.authenticate(conn, token, versions.read(conn).auth)


def _operations(engine: sa.Engine, client_id: str) -> list[str]:
    with engine.connect() as conn:
        query = (
            sa.select(audit_table.c.operation)
            .where(audit_table.c.resource_id == client_id)
            .order_by(audit_table.c.pk)
        )
        found: list[object] = list(conn.execute(query).scalars())
        return [str(op) for op in found]


# -- applications ---------------------------------------------------------------------------


def test_a_new_secret_carries_256_random_bits(engine: sa.Engine) -> None:
    """The secret an admin copies into Entra ID is 43 URL-safe characters (256 bits): a
    shorter one would be a weaker credential than the module promises."""
    _, secret = _app(engine, "entra")
    assert len(secret) == 43


def test_grant_and_scopes_are_read_as_the_portal_shows_them(engine: sa.Engine) -> None:
    """An admin typing the grant as the portal names it ("Bearer token") and a scope in
    another case, twice, gets one application with the canonical grant and one scope."""
    with engine.begin() as conn:
        row, _ = apps.create_app(conn, "okta", "Bearer token", ["user sync", "USER SYNC"], CLI)
    assert row["grant_type"] == "bearer" and row["scopes"] == ["USER SYNC"]


def test_an_application_without_a_scope_is_refused(engine: sa.Engine) -> None:
    """An application with no scope could do nothing: the admin is told to choose one."""
    with engine.begin() as conn, pytest.raises(InvalidValue, match="choose at least one scope"):
        apps.create_app(conn, "none", "bearer", [], CLI)


def test_names_up_to_the_limit_and_with_joiners_are_accepted(engine: sa.Engine) -> None:
    """A name of exactly 128 characters, and a Persian name written with a zero-width
    non-joiner, are valid names; one character more than 128 is not."""
    _app(engine, "x" * apps.MAX_NAME)
    _app(engine, "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645")  # "mi-khaham"
    with engine.begin() as conn, pytest.raises(InvalidValue, match="at most 128"):
        apps.create_app(conn, "y" * (apps.MAX_NAME + 1), "bearer", ["API"], CLI)


def test_token_lifetimes_up_to_a_year_and_none_for_bearer_tokens(engine: sa.Engine) -> None:
    """A year is the longest lifetime an admin may give access tokens, and it is accepted;
    a Bearer token application given a lifetime is refused (it would never apply)."""
    cid, _ = _app(engine, "cc", "client_credentials", lifetime=apps.MAX_LIFETIME)
    with engine.connect() as conn:
        assert apps.get_app(conn, cid)["token_lifetime"] == apps.MAX_LIFETIME
    with engine.begin() as conn, pytest.raises(InvalidValue, match="does not expire"):
        apps.create_app(conn, "b", "bearer", ["API"], CLI, lifetime=60)


def test_one_application_cannot_revoke_another_applications_secret(engine: sa.Engine) -> None:
    """Revoking "secret N of application A" where N is application B's secret is a 404, and
    B's Entra ID connection keeps working."""
    a, _ = _app(engine, "a")
    b, b_secret = _app(engine, "b")
    with engine.begin() as conn:
        b_secret_id = apps.get_app(conn, b)["secrets"][0]["id"]
    with engine.begin() as conn, pytest.raises(NotFound, match="no active secret"):
        apps.revoke_secret(conn, a, b_secret_id, CLI)
    with engine.connect() as conn:
        assert apps.get_app(conn, b)["secrets"][0]["revoked"] is None
        assert apps.authenticate(conn, b_secret) is not None


def test_a_secret_revoked_twice_is_a_404_the_second_time(engine: sa.Engine) -> None:
    """The second revoke of one secret says it has no active secret of that id, and the
    audit log holds one revocation (the revocation date is not moved)."""
    cid, _ = _app(engine, "a")
    with engine.begin() as conn:
        apps.rotate_secret(conn, cid, CLI)
        first = apps.get_app(conn, cid)["secrets"][0]["id"]
        apps.revoke_secret(conn, cid, first, CLI)
    with engine.begin() as conn, pytest.raises(NotFound, match="no active secret"):
        apps.revoke_secret(conn, cid, first, CLI)
    assert _operations(engine, cid).count("app.revoke_secret") == 1


def test_revoking_an_old_secret_keeps_the_new_secrets_tokens(engine: sa.Engine) -> None:
    """After rotation, revoking the old secret ends the tokens it obtained, while tokens the
    client already got with the new secret keep working (rotation without downtime)."""
    cid, old = _app(engine, "cc", "client_credentials")
    with engine.begin() as conn:
        new = apps.rotate_secret(conn, cid, CLI)
        old_token = tokens.issue_token(conn, cid, old, None)["access_token"]
        new_token = tokens.issue_token(conn, cid, new, None)["access_token"]
        old_id = apps.secret_id(conn, old)
        apps.revoke_secret(conn, cid, old_id, CLI)
    with engine.connect() as conn:
        assert apps.authenticate(conn, old_token) is None
        assert apps.authenticate(conn, new_token) is not None


def test_repeated_revoke_and_disable_record_one_change(engine: sa.Engine) -> None:
    """Revoking an application already revoked, or disabling one already disabled, changes
    nothing: the audit log the portal shows names each change once."""
    revoked, _ = _app(engine, "r")
    disabled, _ = _app(engine, "d")
    with engine.begin() as conn:
        apps.revoke_app(conn, revoked, CLI)
        apps.set_enabled(conn, disabled, False, CLI)
    with engine.begin() as conn:
        apps.revoke_app(conn, revoked, CLI)
        apps.set_enabled(conn, disabled, False, CLI)
    assert _operations(engine, revoked) == ["app.create", "app.revoke"]
    assert _operations(engine, disabled) == ["app.create", "app.disable"]


def test_a_rotation_is_recorded_as_a_rotation(engine: sa.Engine) -> None:
    """The audit log says a secret was rotated, not that the application was created again."""
    cid, _ = _app(engine, "a")
    with engine.begin() as conn:
        apps.rotate_secret(conn, cid, CLI)
    assert _operations(engine, cid) == ["app.create", "app.rotate"]


def test_disable_then_enable_brings_no_access_token_back(engine: sa.Engine) -> None:
    """Disabling ends the tokens an application was issued; enabling it again does not revive
    them (a client asks for a new one)."""
    cid, secret = _app(engine, "cc", "client_credentials")
    with engine.begin() as conn:
        token = tokens.issue_token(conn, cid, secret, None)["access_token"]
    with engine.begin() as conn:
        apps.set_enabled(conn, cid, False, CLI)
    with engine.begin() as conn:
        apps.set_enabled(conn, cid, True, CLI)
    with engine.connect() as conn:
        assert apps.authenticate(conn, token) is None
        assert apps.authenticate(conn, secret) is None  # a client secret is no bearer token


def test_an_access_token_ends_at_its_expiry_second(engine: sa.Engine) -> None:
    """An access token is valid before its expiry and refused from the expiry on, whether
    verified afresh or served from the token cache."""
    cid, secret = _app(engine, "cc", "client_credentials", lifetime=60)
    with engine.begin() as conn:
        token = tokens.issue_token(conn, cid, secret, None)["access_token"]
        conn.execute(sa.text("UPDATE access_tokens SET expires = :e"), {"e": 2_000_000_000})
    with engine.connect() as conn:
        assert apps._verify(conn, apps.digest(token), 1_999_999_999.0) is not None
        assert apps._verify(conn, apps.digest(token), 2_000_000_000.0) is None
    now = [1_999_999_999.0]
    cache = apps.TokenCache(clock=lambda: now[0])
    assert _check(engine, cache, token) is not None
    now[0] = 2_000_000_000.0  # within RECHECK: answered from the cache
    assert _check(engine, cache, token) is None


def test_applications_are_listed_in_the_order_they_were_made(engine: sa.Engine) -> None:
    """`scimd apps list` and the portal list applications oldest first, not by name."""
    for name in ("okta", "entra"):
        _app(engine, name)
    with engine.connect() as conn:
        assert [a["name"] for a in apps.list_apps(conn)] == ["okta", "entra"]


def test_the_audit_of_a_new_application_names_its_grant_and_scopes(engine: sa.Engine) -> None:
    """The audit log says what an application was allowed when it was made."""
    cid, _ = _app(engine, "entra")
    with engine.connect() as conn:
        query = sa.select(audit_table.c.detail).where(audit_table.c.resource_id == cid)
        detail: object = conn.execute(query).scalar_one()
    assert detail == {"name": "entra", "grant": "bearer", "scopes": ["USER SYNC"]}


def test_a_verification_is_checked_again_within_about_a_minute(engine: sa.Engine) -> None:
    """After a restore from a backup that predates a secret, a process stops accepting the
    (now unknown) secret it cached within a minute, not ten."""
    now = [1_000.0]
    cache = apps.TokenCache(clock=lambda: now[0])
    _, secret = _app(engine, "entra")
    assert _check(engine, cache, secret) is not None
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM client_secrets"))
    now[0] += 61
    assert _check(engine, cache, secret) is None


def test_a_scim_write_is_audited_as_the_application_that_made_it(tmp_path: Path) -> None:
    """The portal's audit log says the application ("t") created a user that Entra ID
    provisioned, not the command line."""
    with serving(f"sqlite:///{tmp_path / 'w.db'}") as api:
        made = api.user("audited@example.com")
        with api.engine.connect() as conn:
            query = sa.select(audit_table.c.actor_type, audit_table.c.actor_name).where(
                audit_table.c.resource_id == made["id"]
            )
            assert conn.execute(query).one() == ("app", "t")


# -- metrics --------------------------------------------------------------------------------


def test_the_latency_sum_adds_every_request() -> None:
    """The histogram's _sum is the total of the latencies (sum/count is the mean latency an
    operator graphs), not the last one."""
    m = Metrics()
    m.observe("/healthz", "GET", 200, 0.25)
    m.observe("/healthz", "GET", 200, 0.5)
    text = generate_latest(m.registry).decode()
    assert 'scimd_request_duration_seconds_sum{method="GET",route="/healthz"} 0.75' in text


def test_counters_kept_elsewhere_are_exported_as_read() -> None:
    """A counter added with ``add_counter`` shows the value it reads at scrape time."""
    m = Metrics()
    m.add_counter("scimd_db_write_retries", "retries", lambda: 3)
    assert "scimd_db_write_retries_total 3.0" in generate_latest(m.registry).decode()


def test_route_labels_of_the_base_searches_and_static_files() -> None:
    """The SCIM base is its own label; /.search with more after it is "other" (there is no
    such route); the portal's static files share one label, "/admin/static/{path}"."""
    static = Mount("/admin/static", StaticFiles(directory=str(portal.HERE / "static")))
    routes = observability.app_routes([static])
    assert observability.route_of("/scim/v2") == "/scim/v2"
    assert observability.route_of("/scim/v2/.search/x") == "/scim/v2/other"
    assert observability.route_of("/admin/static/portal.css", routes) == "/admin/static/{path}"


def test_a_route_that_raises_is_counted_and_logged_as_a_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request whose handler failed is a 500 in /metrics and in the access log, not a 200:
    the operator's error rate must see it."""

    async def broken(self: object, request: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(TokenEndpoint, "handle", broken)
    stream = io.BytesIO()
    app = create_app(Settings(), create_engine(f"sqlite:///{tmp_path / 'b.db'}"), log_stream=stream)
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.post("/oauth2/server/token").status_code == 500
        text = c.get("/metrics").text
    route = 'route="/oauth2/server/token"'
    assert f'scimd_requests_total{{method="POST",{route},status="500"}} 1.0' in text
    line = json.loads(stream.getvalue().decode().splitlines()[0])
    assert line["route"] == "/oauth2/server/token" and line["status"] == 500


# -- logs -----------------------------------------------------------------------------------


def test_the_access_line_says_duration_in_ms_client_address_and_padded_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request that took 250 ms (by the server's clock) is logged with duration_ms 250.0,
    counted in the 0.25 s bucket, with the client's address and a timestamp whose
    milliseconds have three digits (62 ms is ".062", not ".62")."""
    fake = types.SimpleNamespace(
        perf_counter=lambda: 10.25,
        time=lambda: 1_700_000_000.0625,
        strftime=time.strftime,
        gmtime=time.gmtime,
    )
    metrics = Metrics()
    stream = io.BytesIO()
    access_log = AccessLog(stream)
    observer = Observer(metrics, access_log)
    monkeypatch.setattr(observability, "time", fake)
    scope = {"type": "http", "path": "/scim/v2/Users", "method": "GET", "client": ("10.0.0.7", 5)}
    rid = contextvars.copy_context().run(observer.start, scope)  # its own request context
    observer.finish(scope, rid, 200, 10.0)
    access_log.flush()
    monkeypatch.undo()
    line = json.loads(stream.getvalue())
    assert line["duration_ms"] == 250.0 and line["client"] == "10.0.0.7"
    assert line["ts"] == "2023-11-14T22:13:20.062Z"
    text = generate_latest(metrics.registry).decode()
    labels = 'method="GET",route="/scim/v2/Users"'
    assert f'scimd_request_duration_seconds_bucket{{le="0.1",{labels}}} 0.0' in text
    assert f'scimd_request_duration_seconds_bucket{{le="0.25",{labels}}} 1.0' in text


def test_the_access_line_names_the_path_and_method_as_sent() -> None:
    """The metrics fold ids and unusual methods into labels; the access line keeps what the
    client sent (the user id an operator is looking for, the PROPFIND a scanner tried)."""
    stream = io.BytesIO()
    access_log = AccessLog(stream)
    observer = Observer(Metrics(), access_log)
    scope = {"type": "http", "path": "/scim/v2/Users/abc", "method": "PROPFIND"}
    rid = contextvars.copy_context().run(observer.start, scope)
    observer.finish(scope, rid, 405, 0.0)
    access_log.flush()
    line = json.loads(stream.getvalue())
    assert line["path"] == "/scim/v2/Users/abc" and line["route"] == "/scim/v2/Users/{id}"
    assert line["method"] == "PROPFIND"


def test_other_log_lines_name_their_level_in_lower_case() -> None:
    """Error and warning lines say "level": "warning", as the access lines say "info", and
    their time has three millisecond digits: a shipper sees one spelling of each."""
    record = logging.LogRecord("scimd.web", logging.WARNING, __file__, 1, "slow", None, None)
    record.created, record.msecs = 1_700_000_000.0625, 62.5
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "warning"
    assert line["ts"] == "2023-11-14T22:13:20.062Z"  # as the access lines write it


def test_the_scim_base_is_counted_under_its_own_route(tmp_path: Path) -> None:
    """GET /scim/v2 (what a client probing the Tenant URL asks) has its own label."""
    with serving(f"sqlite:///{tmp_path / 's.db'}") as api:
        api.req("GET", "")
        text = api.client.get("/metrics").text
    assert 'route="/scim/v2",' in text


def test_replies_outside_scim_carry_the_request_id_of_their_log_line(tmp_path: Path) -> None:
    """A failed token request or a health check is looked up in the log by the reply's
    X-Request-Id, as a SCIM reply is: it must be there, and be the id the access line names."""
    stream = io.BytesIO()
    app = create_app(Settings(), create_engine(f"sqlite:///{tmp_path / 'r.db'}"), log_stream=stream)
    with TestClient(app) as c:
        replies = [c.get("/healthz"), c.post("/oauth2/server/token")]
    assert [r.status_code for r in replies] == [200, 400]
    logged = [json.loads(x)["request_id"] for x in stream.getvalue().decode().splitlines()]
    assert [r.headers.get("x-request-id") for r in replies] == logged
