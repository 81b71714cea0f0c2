"""From a mutation audit of the ASGI app (path tidying, routing, refusals, start-up and
shutdown) and of the schema migrations (refused databases and what they are told): as a
SCIM client, an operator or the portal sees them."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.testclient import TestClient

from scimd.settings import Settings
from scimd.store import migrate
from scimd.store.engine import create_engine
from scimd.web.app import create_app
from support.api import Api, serving


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with serving(f"sqlite:///{tmp_path / 'app.db'}") as api:
        yield api


def test_doubled_slashes_outside_the_scim_api_are_collapsed(api: Api) -> None:
    """A load balancer given ``https://HOST/`` as its base probes ``//healthz``, and a portal
    link joined the same way asks for ``/admin//login``: both are served, not a 404."""
    r = api.client.get("http://testserver//healthz", follow_redirects=False)
    assert r.status_code == 200 and r.json() == {"status": "ok"}, (r.status_code, r.text)
    r = api.client.get("http://testserver/admin//login", follow_redirects=False)
    assert r.status_code == 200 and "<form" in r.text, (r.status_code, r.text[:300])


def test_a_base_missing_its_slash_is_told_the_right_one(api: Api) -> None:
    """A Tenant URL glued to the endpoint without a slash (``.../scim/v2Users``) or with
    another version (``/scim/v20``) is not the SCIM API: the client is told the right base
    instead of being answered as if its URL were right."""
    auth = {"Authorization": f"Bearer {api.token}"}
    for path in ("/scim/v2Users", "/scim/v20/Users"):
        r = api.client.get(path, headers=auth)
        assert r.status_code == 404, (path, r.status_code, r.text)
        assert "SCIM base is http://testserver/scim/v2/" in r.json()["detail"], path


def test_another_applications_many_tables_are_named_five_then_an_ellipsis(
    tmp_path: Path,
) -> None:
    """An operator pointing scimd at another application's database is told which tables are
    in the way: the first five by name, then "...", so the message stays one readable line."""
    engine = create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        with engine.begin() as conn:
            for name in ("t1", "t2", "t3", "t4", "t5", "t6"):
                conn.execute(sa.text(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY)"))
        with pytest.raises(migrate.DatabaseUnsupported) as refused:
            migrate.ensure_current(engine)
        assert "(t1, t2, t3, t4, t5, ...)" in str(refused.value), str(refused.value)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE t6"))
        with pytest.raises(migrate.DatabaseUnsupported) as refused:
            migrate.ensure_current(engine)
        assert "(t1, t2, t3, t4, t5)" in str(refused.value), str(refused.value)
    finally:
        engine.dispose()


def test_a_command_on_a_newer_scimds_database_is_not_told_to_upgrade_it(
    tmp_path: Path,
) -> None:
    """A command (not `serve`) on a database a newer scimd made must say so: told it was
    "behind", the operator would stop servers and run `scimd db upgrade` on a database this
    scimd cannot read."""
    engine = create_engine(f"sqlite:///{tmp_path / 'newer.db'}")
    try:
        migrate.ensure_current(engine)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
        with pytest.raises(migrate.DatabaseUnsupported) as refused:
            migrate.ensure_current(engine, upgrade_behind=False)
        said = str(refused.value)
        assert not isinstance(refused.value, migrate.DatabaseBehind), said
        assert "revision 0099, which this scimd does not know" in said, said
        assert "db upgrade" not in said, said
        assert migrate.current(engine) == "0099"  # untouched
    finally:
        engine.dispose()


def test_a_case_pair_icu_knows_in_a_code_point_python_has_not_assigned_is_found() -> None:
    """A newer ICU in PostgreSQL may lower-case a character this Python's Unicode has not
    assigned yet: filters would then match there and not here. The server's start-up check
    must see it (U+0378 is unassigned)."""
    sample = migrate.cased_sample()
    theirs = " ".join("x" if word == "\u0378" else word.lower() for word in sample.split(" "))
    assert migrate.lowered_otherwise(sample, theirs) == ["\u0378"]


def test_requests_refused_outside_the_scim_api_are_counted(api: Api) -> None:
    """A scanner probing the health check with a NUL in its query is refused with a 400; an
    operator must still see those requests in /metrics (they were invisible there)."""
    r = api.client.get("/healthz?probe=%00")
    assert r.status_code == 400, r.text
    text = api.client.get("/metrics").text
    counted = [
        line
        for line in text.splitlines()
        if line.startswith("scimd_requests_total{")
        and 'route="/healthz"' in line
        and 'status="400"' in line
    ]
    assert counted and counted[0].endswith(" 1.0"), text


def test_a_405_outside_the_portal_names_the_allowed_methods(api: Api) -> None:
    """RFC 9110 §15.5.6: a 405 carries Allow. A client that GETs the token endpoint, or POSTs
    to the health check, learns which method to use."""
    r = api.client.get("/oauth2/server/token")
    assert r.status_code == 405 and r.headers.get("allow") == "POST", (r.status_code, r.headers)
    r = api.client.post("/healthz")
    assert r.status_code == 405 and "GET" in r.headers.get("allow", ""), r.headers


def test_a_locked_database_is_a_503_to_retry_on_pages_and_endpoints(tmp_path: Path) -> None:
    """A page of the portal, or an endpoint outside the SCIM API, meeting a locked database
    answers 503 with Retry-After (the portal as its own "Try again later" page, the others as
    a SCIM error), so that a browser, a monitor or a client knows to come back."""
    engine = create_engine(f"sqlite:///{tmp_path / 'locked.db'}")
    app = create_app(Settings(), engine)

    async def locked(request: Request) -> Response:
        raise sqlite3.OperationalError("database is locked")

    app.add_route("/admin/locked", locked)  # as any portal page meeting the lock
    app.add_route("/locked", locked)
    try:
        with TestClient(app) as client:
            page = client.get("/admin/locked")
            assert page.status_code == 503 and "Try again later" in page.text, page.text
            assert page.headers.get("retry-after") == "5", page.headers
            other = client.get("/locked")
            assert other.status_code == 503, other.text
            assert other.headers["content-type"].startswith("application/scim+json")
            assert other.headers.get("retry-after") == "5", other.headers
    finally:
        engine.dispose()


def test_answered_scim_requests_are_not_counted_as_running(api: Api) -> None:
    """At shutdown the server waits for the SCIM requests still running (up to 5 s): one
    answered but still counted would make every stop of the server wait the whole 5 s."""
    api.user("run@x.com")
    api.req("GET", "/Users")
    api.req("GET", "/Users/no-such-id")
    app = api.client.app
    assert getattr(app, "running", None) == 0


def test_a_command_on_an_older_schema_says_to_stop_old_servers_and_how_to_upgrade(
    tmp_path: Path,
) -> None:
    """The refusal of a command on a database an older scimd made is the operator's only
    instruction: stop the older servers first, then `scimd db upgrade`, or start `scimd
    serve`, which upgrades it."""
    engine = create_engine(f"sqlite:///{tmp_path / 'older.db'}")
    try:
        migrate.upgrade(engine, "0005")
        with pytest.raises(migrate.DatabaseBehind) as refused:
            migrate.ensure_current(engine, upgrade_behind=False)
        said = " ".join(str(refused.value).split())
        assert "stop every server of the older scimd that uses it" in said, said
        assert "then run `scimd db upgrade`" in said, said
        assert "`scimd serve`, which upgrades it" in said, said
        assert migrate.current(engine) == "0005"  # untouched
    finally:
        engine.dispose()


def test_shutdown_waits_for_the_scim_requests_still_answering(tmp_path: Path) -> None:
    """uvicorn cancels the requests still running when it stops: the app waits for them to
    answer (their 503 and access-log line) before it closes the portal, the database
    connections and the log, so that no request is answered on a closed server."""
    engine = create_engine(f"sqlite:///{tmp_path / 'stop.db'}")
    app = create_app(Settings(), engine)
    portal = app.state.portal
    close = portal.close
    running_at_close: list[int] = []

    def closing() -> None:
        running_at_close.append(app.running)  # type: ignore[attr-defined]
        close()

    portal.close = closing  # type: ignore[method-assign]
    drain = app.drain  # type: ignore[attr-defined]

    async def main() -> list[str]:
        inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        sent: list[str] = []
        draining = asyncio.Event()

        async def watched_drain(seconds: float) -> None:
            draining.set()
            await drain(seconds)

        app.drain = watched_drain  # type: ignore[attr-defined]

        async def receive() -> dict[str, str]:
            return await inbox.get()

        async def send(message: dict[str, str]) -> None:
            sent.append(message["type"])

        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        await inbox.put({"type": "lifespan.startup"})
        lifespan = asyncio.create_task(app(scope, receive, send))  # type: ignore[arg-type]
        while "lifespan.startup.complete" not in sent:
            assert not lifespan.done(), sent
            await asyncio.sleep(0.01)
        app.running = 1  # type: ignore[attr-defined]  # a cancelled request, answering
        await inbox.put({"type": "lifespan.shutdown"})
        await draining.wait()
        await asyncio.sleep(0)
        app.running = 0  # type: ignore[attr-defined]  # it has answered
        await lifespan
        return sent

    try:
        sent = asyncio.run(main())
    finally:
        engine.dispose()
    assert sent[-1] == "lifespan.shutdown.complete", sent
    assert running_at_close == [0]


def test_healthz_is_a_503_while_the_database_cannot_answer(tmp_path: Path) -> None:
    """A load balancer or Kubernetes probe reads /healthz: while the database cannot answer
    (locked, unreachable) it must say "unavailable" with a 503 (retry, take the instance out
    of rotation), not a 500 that reads as a fault of scimd's."""
    engine = create_engine(f"sqlite:///{tmp_path / 'health.db'}")
    app = create_app(Settings(), engine)

    def unreachable() -> None:
        raise sqlite3.OperationalError("unable to open database file")

    app.state.directory.read = unreachable
    try:
        with TestClient(app) as client:
            r = client.get("/healthz")
            assert r.status_code == 503, (r.status_code, r.text)
            assert r.json() == {"status": "unavailable"}
    finally:
        engine.dispose()
