"""Health, metrics and structured logs: what an operator sees, and what they must never see."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import time
import types
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from scimd.auth import apps
from scimd.scim.schema import USER_SCHEMA
from scimd.settings import Settings
from scimd.store import audit
from scimd.store.engine import create_engine
from scimd.web import security
from scimd.web.app import create_app
from scimd.web.observability import JsonFormatter
from scimd.web.scim import Scim
from support.live_server import create_app as create_bearer_app
from support.live_server import sqlite_url, start_server


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    engine = create_engine(f"sqlite:///{tmp_path / 'ops.db'}")
    app = create_app(Settings(), engine)
    with engine.begin() as conn:
        _, token = apps.create_app(conn, "ops", "bearer", ["API", "USER SYNC"], audit.CLI)
    with TestClient(app) as c:
        yield c, token


def test_the_root_names_the_scim_base_and_the_portal(client: tuple[TestClient, str]) -> None:
    """Someone opening the server's address learns where the SCIM base and the portal are."""
    c, _ = client
    r = c.get("/")
    assert r.status_code == 200
    assert r.json() == {
        "service": "scimd",
        "scim": "http://testserver/scim/v2/",
        "portal": "http://testserver/admin/",
        "health": "/healthz",
    }
    assert c.get("/admin/", follow_redirects=False).status_code in (302, 303, 307)


def test_healthz(client: tuple[TestClient, str]) -> None:
    """GET /healthz answers 200 without authentication when the database answers."""
    c, _ = client
    r = c.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_metrics_count_requests_by_route_and_status(client: tuple[TestClient, str]) -> None:
    """/metrics counts requests by route (ids folded to {id}) and status, with latencies."""
    c, token = client
    h = {"Authorization": f"Bearer {token}"}
    c.get("/scim/v2/Users/abc", headers=h)
    c.get("/scim/v2/Users/def", headers=h)
    c.get("/scim/v2/Users", headers={"Authorization": "Bearer wrong"})
    text = c.get("/metrics").text
    assert 'scimd_requests_total{method="GET",route="/scim/v2/Users/{id}",status="404"} 2.0' in text
    assert 'scimd_requests_total{method="GET",route="/scim/v2/Users",status="401"} 1.0' in text
    assert "scimd_request_duration_seconds_bucket" in text


def test_paths_the_app_does_not_serve_share_one_label(client: tuple[TestClient, str]) -> None:
    """A scanner's random paths were each a label until the series cap, after which real routes
    were counted as "other" too. Unknown paths are "other" at once; real ones keep theirs."""
    c, token = client
    h = {"Authorization": f"Bearer {token}"}
    for i in range(50):
        c.get(f"/probe{i}/x")
        c.get(f"/scim/v2/Nothing{i}", headers=h)
    c.get("/scim/v2/users/abc/extra", headers=h)
    c.get("/scim/v2/serviceproviderconfig", headers=h)
    c.get("/admin/security/oauth2-applications/some-client")
    c.get("/healthz")
    text = c.get("/metrics").text
    routes = {
        line.split('route="', 1)[1].split('"', 1)[0]
        for line in text.splitlines()
        if line.startswith("scimd_requests_total{")
    }
    assert routes == {
        "other",
        "/scim/v2/other",
        "/scim/v2/ServiceProviderConfig",
        "/admin/security/oauth2-applications/{client_id}",
        "/admin/login",  # where that page sends a visitor who is not signed in
        "/healthz",
    }


def test_unusual_methods_share_one_label(client: tuple[TestClient, str]) -> None:
    """Each method the parser takes (PROPFIND, M-SEARCH, ...) was a latency histogram per
    route: ~1,700 requests of a scanner made /metrics 14,600 series."""
    c, token = client
    h = {"Authorization": f"Bearer {token}"}
    for method in ("PROPFIND", "MKCALENDAR", "SEARCH", "LOCK"):
        c.request(method, "/scim/v2/Users", headers=h)
    c.request("PATCH", "/scim/v2/Users", headers=h)
    text = c.get("/metrics").text
    methods = {
        line.split('method="', 1)[1].split('"', 1)[0]
        for line in text.splitlines()
        if line.startswith("scimd_requests_total{") and 'route="/scim/v2/Users"' in line
    }
    assert methods == {"other", "PATCH"}


def test_access_log_is_json_with_request_id_and_no_secret(tmp_path: Path) -> None:
    """Each request logs one JSON line with request id, app, status and duration; never a token."""
    engine = create_engine(f"sqlite:///{tmp_path / 'log.db'}")
    stream = io.BytesIO()
    app = create_app(Settings(), engine, log_stream=stream)
    with engine.begin() as conn:
        _, token = apps.create_app(conn, "ops", "bearer", ["API", "USER SYNC"], audit.CLI)
    with TestClient(app) as c:
        r = c.get(
            '/scim/v2/Users?filter=userName eq "x"',
            headers={"Authorization": f"Bearer {token}", "X-Request-Id": "req-123"},
        )
        c.get("/scim/v2/Users", headers={"Authorization": f"Bearer {token}"})
        made = c.post(
            "/scim/v2/Users",
            json={"userName": "audited@x.com"},
            headers={"Authorization": f"Bearer {token}", "X-Request-Id": "req-123"},
        )
    with engine.connect() as conn:
        recorded = conn.execute(
            sa.text("SELECT request_id FROM audit WHERE resource_id = :id"),
            {"id": made.json()["id"]},
        ).scalar_one()
    assert recorded == made.headers["x-request-id"] != "req-123"
    # The id is the server's (audit records name it; a client could reuse another request's),
    # and the client's is logged beside it.
    rid = r.headers["x-request-id"]
    assert rid != "req-123"
    lines = stream.getvalue().decode().splitlines()  # flushed at shutdown at the latest
    assert len(lines) == 3
    data = json.loads(lines[0])
    assert data["request_id"] == rid and data["client_request_id"] == "req-123"
    assert data["status"] == 200 and data["ts"].endswith("Z")
    assert data["route"] == "/scim/v2/Users" and data["app"] and data["duration_ms"] >= 0
    assert data["level"] == "info" and data["logger"] == "scimd.access"  # as other lines
    second = json.loads(lines[1])
    assert second["request_id"] not in (rid, "req-123") and "client_request_id" not in second
    assert token not in stream.getvalue().decode() and "Bearer" not in stream.getvalue().decode()


def test_failed_authentications_are_throttled(tmp_path: Path) -> None:
    """Past the per-minute limit, a failure from the address is a 429 (Retry-After: the
    seconds left) instead of a 401; a valid token from the same address still gets in (a
    client behind the same NAT or proxy was locked out), and requests without credentials
    (a load balancer's probe) do not count. A 401 for a token names it invalid."""
    engine = create_engine(f"sqlite:///{tmp_path / 't.db'}")
    app = create_app(Settings(auth_failures_per_minute=3), engine)
    with engine.begin() as conn:
        _, token = apps.create_app(conn, "t", "bearer", ["USER SYNC"], audit.CLI)
    bad = {"Authorization": "Bearer no"}
    with TestClient(app) as c:
        for _ in range(10):
            assert c.get("/scim/v2/Users").status_code == 401
        for _ in range(3):  # the limit's worth of failures are 401s; the next is past it
            r = c.get("/scim/v2/Users", headers=bad)
            assert r.status_code == 401
            assert r.headers["www-authenticate"] == 'Bearer realm="scimd", error="invalid_token"'
        r = c.get("/scim/v2/Users", headers=bad)
        assert r.status_code == 429 and 0 < int(r.headers["retry-after"]) <= 60
        assert r.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
        r = c.get("/scim/v2/Users", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
        assert c.get("/scim/v2/Users", headers=bad).status_code == 429


def _failures(url: str, addresses: list[str]) -> list[int]:
    """Statuses of requests with a wrong token, each claiming to come from an address."""
    bad = {"Authorization": "Bearer no"}
    return [
        httpx.get(f"{url}/Users", headers={**bad, "X-Forwarded-For": a}).status_code
        for a in addresses
    ]


def _location_scheme(url: str, token: str, name: str) -> str:
    r = httpx.post(
        f"{url}/Users",
        json={"schemas": [USER_SCHEMA], "userName": name},
        headers={"Authorization": f"Bearer {token}", "X-Forwarded-Proto": "https"},
    )
    assert r.status_code == 201
    return r.headers["location"].split(":", 1)[0]


def test_forwarded_headers_are_believed_only_from_named_proxies(tmp_path: Path) -> None:
    """By default X-Forwarded-For is believed from loopback, the TLS proxy on the same host
    the docs recommend: each client address its own failed-authentication limit (believing
    nobody made every client 127.0.0.1, one bucket anyone could fill), and X-Forwarded-Proto
    the scheme of locations. --forwarded-allow-ips "" believes nobody: a client naming a
    new address on each request then still meets the limit."""
    url = sqlite_url(tmp_path / "f.db")
    token = create_bearer_app(url, "entra").client_secret
    env = {"SCIMD_AUTH_FAILURES_PER_MINUTE": "3"}
    with start_server(url, log_dir=tmp_path, env=env) as server:
        assert _failures(server.scim_url, [f"10.0.1.{i}" for i in range(4)]) == [401] * 4
        assert _failures(server.scim_url, ["10.0.2.1"] * 4) == [401, 401, 401, 429]
        assert _location_scheme(server.scim_url, token, "a") == "https"
    nobody = ["--forwarded-allow-ips", ""]
    with start_server(url, log_dir=tmp_path, env=env, extra_args=nobody) as server:
        spoofed = [f"10.0.0.{i}" for i in range(4)]
        assert _failures(server.scim_url, spoofed) == [401, 401, 401, 429]
        assert _location_scheme(server.scim_url, token, "b") == "http"


def test_entra_flag_query_parameter_is_ignored(client: tuple[TestClient, str]) -> None:
    """An aadOptscim062020 flag forwarded from the Tenant URL does not change the answer."""
    c, token = client
    h = {"Authorization": f"Bearer {token}"}
    r = c.get('/scim/v2/Users?aadOptscim062020&filter=userName eq "nobody"', headers=h)
    assert r.status_code == 200 and r.json()["totalResults"] == 0


def test_latency_histogram_is_cumulative_with_le_bounds() -> None:
    """Bucket counts are cumulative, a value equal to a bound counts in that bucket."""
    from prometheus_client import generate_latest

    from scimd.web.observability import Metrics

    m = Metrics()
    for seconds in (0.0004, 0.0005, 0.003, 7.0, 31.0):
        m.observe("/scim/v2/Users", "GET", 200, seconds)
    m.observe("/scim/v2/Users", "GET", 404, 0.001)
    text = generate_latest(m.registry).decode()
    labels = 'method="GET",route="/scim/v2/Users"'
    assert f'scimd_request_duration_seconds_bucket{{le="0.0005",{labels}}} 2.0' in text
    assert f'scimd_request_duration_seconds_bucket{{le="0.001",{labels}}} 3.0' in text
    assert f'scimd_request_duration_seconds_bucket{{le="0.005",{labels}}} 4.0' in text
    assert f'scimd_request_duration_seconds_bucket{{le="5.0",{labels}}} 4.0' in text
    # A write that waited out a 30 s database_timeout is told from one that took 7 s.
    assert f'scimd_request_duration_seconds_bucket{{le="10.0",{labels}}} 5.0' in text
    assert f'scimd_request_duration_seconds_bucket{{le="30.0",{labels}}} 5.0' in text
    assert f'scimd_request_duration_seconds_bucket{{le="+Inf",{labels}}} 6.0' in text
    assert f"scimd_request_duration_seconds_count{{{labels}}} 6.0" in text
    assert 'scimd_requests_total{method="GET",route="/scim/v2/Users",status="200"} 5.0' in text


def _wait_read(server_port: int, client_port: int) -> None:
    """Wait until the server side of a loopback connection has nothing left unread (its
    receive queue in /proc/net/tcp is empty)."""
    import time

    deadline = time.monotonic() + 30
    while True:
        with open("/proc/net/tcp", encoding="ascii") as f:
            for line in f.readlines()[1:]:
                local, remote, _, queues = line.split()[1:5]
                ends = (int(local.split(":")[1], 16), int(remote.split(":")[1], 16))
                if ends == (server_port, client_port) and int(queues.split(":")[1], 16) == 0:
                    return
        assert time.monotonic() < deadline, "the server never read the request"
        time.sleep(0.02)


@pytest.mark.parametrize("path", ["/scim/v2/Users", "/oauth2/server/token"])
def test_a_stopping_server_does_not_wait_forever_for_a_slow_client(
    tmp_path: Path, path: str
) -> None:
    """SIGTERM waits for requests in progress, but at most ``shutdown_timeout`` seconds: a
    client sending its body a byte every half second (no token needed) kept the server
    alive until it was killed."""
    import signal
    import socket
    import subprocess
    import threading

    from support.live_server import sqlite_url, start_server

    with start_server(
        sqlite_url(tmp_path / "slow.db"), log_dir=tmp_path, env={"SCIMD_SHUTDOWN_TIMEOUT": "2"}
    ) as server:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n".encode()
            + b"Content-Type: "
            + (b"application/scim+json" if "scim" in path else b"application/x-www-form-urlencoded")
            + b"\r\nContent-Length: 4000\r\n\r\n{"
        )
        done = threading.Event()

        def trickle() -> None:
            while not done.wait(0.5):
                try:
                    sock.sendall(b" ")
                except OSError:
                    return

        threading.Thread(target=trickle, daemon=True).start()
        try:
            # SIGTERM once the server has read the head (its request is then in progress): a
            # connection with none is closed as idle, and the reply is no 503.
            _wait_read(server.port, sock.getsockname()[1])
            server.process.send_signal(signal.SIGTERM)
            try:
                server.process.wait(timeout=60)  # a bound for the test, not a measured time
            except subprocess.TimeoutExpired:
                pytest.fail("the server still waited for the slow client after 60 s")
            done.set()
            sock.settimeout(10)
            reply = b""
            with contextlib.suppress(OSError):
                while chunk := sock.recv(65536):
                    reply += chunk
        finally:
            done.set()
            sock.close()
        # The request it gave up on is told to retry (it got a plain-text 500).
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), reply[:300]
        assert b"content-type: application/scim+json" in head.lower()
        assert head.lower().count(b"retry-after:") == 1 and b"retry-after: 5" in head.lower()
        assert json.loads(body)["status"] == "503"


def test_a_forced_quit_keeps_the_access_log(tmp_path: Path) -> None:
    """A second Ctrl+C skips the app's shutdown, which flushed the access log: the last
    250 ms of lines, answered requests among them, were lost."""
    import signal
    import threading

    from support.live_server import create_app as make_app
    from support.live_server import sqlite_url, start_server

    url = sqlite_url(tmp_path / "quit.db")
    creds = make_app(url, "q")
    headers = {"Authorization": f"Bearer {creds.client_secret}"}
    ops = [
        {"method": "POST", "path": "/Users", "bulkId": f"b{i}", "data": {"userName": f"b{i}@x"}}
        for i in range(1000)
    ]
    bulk = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops}
    with start_server(url, log_dir=tmp_path) as server:

        def long_bulk() -> None:  # in progress when the server is stopped
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(f"{server.scim_url}/Bulk", json=bulk, headers=headers, timeout=60)

        threading.Thread(target=long_bulk, daemon=True).start()
        r = httpx.post(f"{server.scim_url}/Users", json={"userName": "last@x.com"}, headers=headers)
        assert r.status_code == 201
        server.process.send_signal(signal.SIGINT)
        time.sleep(0.05)
        server.process.send_signal(signal.SIGINT)
        server.process.wait(timeout=30)
    rid = r.headers["x-request-id"]
    lines = [json.loads(x) for x in server.stderr_text().splitlines() if x.startswith("{")]
    assert [x["status"] for x in lines if x.get("request_id") == rid] == [201]


def test_a_write_waiting_at_shutdown_is_cancelled_not_committed_later(
    postgres_url: str, tmp_path: Path
) -> None:
    """PostgreSQL: a member add waiting for a lock when the server stopped got no reply,
    and ran and committed once the lock was freed, after the process had exited. Its
    statement is now cancelled: the client gets a 503 and nothing is written."""
    import signal
    import threading

    from support.live_server import provisioned_server

    env = {"SCIMD_SHUTDOWN_TIMEOUT": "1"}
    with provisioned_server(postgres_url, log_dir=tmp_path, env=env) as server:
        headers = {"Authorization": f"Bearer {server.token}"}
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as c:
            uid = c.post("/Users", json={"userName": "late@x.com"}).json()["id"]
            gid = c.post("/Groups", json={"displayName": "g"}).json()["id"]
        engine = sa.create_engine(postgres_url)
        # Out of any transaction: pg_stat_activity is read once per transaction, so a loop in
        # one saw the first answer again and again.
        watcher = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
        replies: list[httpx.Response] = []
        try:
            with engine.connect() as holder:
                holder.execute(
                    sa.text("SELECT pk FROM groups WHERE id = :g FOR UPDATE"), {"g": gid}
                )
                body = {
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "add", "path": "members", "value": [{"value": uid}]}],
                }

                def add() -> None:
                    with contextlib.suppress(httpx.HTTPError):
                        replies.append(
                            httpx.patch(
                                f"{server.base_url}/Groups/{gid}",
                                json=body,
                                headers=headers,
                                timeout=60,
                            )
                        )

                thread = threading.Thread(target=add)
                thread.start()
                waiting = sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    # This test's sessions only: another database's (or autovacuum) would
                    # pass for the PATCH, and SIGTERM would come before it.
                    " AND datname = current_database() AND backend_type = 'client backend'"
                )
                with watcher.connect() as probe:
                    for _ in range(600):  # until the PATCH waits for the lock
                        if probe.execute(waiting).scalar_one():
                            break
                        time.sleep(0.05)
                    else:
                        pytest.fail("the PATCH never waited for the group's lock")
                server.process.process.send_signal(signal.SIGTERM)
                server.process.process.wait(timeout=60)
                thread.join(timeout=60)
                holder.commit()  # the lock is freed: a statement still queued would run now
            with watcher.connect() as conn:
                for _ in range(200):  # until no other session runs a statement
                    busy = conn.execute(
                        sa.text(
                            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                            " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                            " AND datname = current_database()"
                        )
                    ).scalar_one()
                    if not busy:
                        break
                    time.sleep(0.05)
                members = conn.execute(
                    sa.text("SELECT count(*) FROM members WHERE member_id = :u"), {"u": uid}
                ).scalar_one()
                patches = conn.execute(
                    sa.text("SELECT count(*) FROM audit WHERE operation = 'patch'")
                ).scalar_one()
        finally:
            engine.dispose()
            watcher.dispose()
        assert (members, patches) == (0, 0)
        # Answered before the app shut down: its access log line was written after the last
        # flush, and lost (and on a loaded machine the 503 too, as the process exited).
        patched = [
            json.loads(line)
            for line in server.process.stderr_text().splitlines()
            if '"scimd.access"' in line and '"PATCH"' in line
        ]
        assert [p["status"] for p in patched] == [503]
        assert [r.status_code for r in replies] == [503]
        assert replies[0].headers["content-type"] == "application/scim+json"
        assert replies[0].headers["retry-after"] == "5"  # once (it was "5, 5")


@pytest.mark.parametrize(("setting", "idle", "kept"), [(None, 6.0, True), ("1", 2.5, False)])
def test_idle_keep_alive_connections_outlast_a_proxys(
    tmp_path: Path, setting: str | None, idle: float, kept: bool
) -> None:
    """uvicorn closed idle connections after 5 s, while the proxies in front of scimd keep
    theirs ~60 s: a request reusing one at that moment got no answer. The default is 75 s
    (``SCIMD_KEEP_ALIVE_TIMEOUT``)."""
    import socket

    env = {"SCIMD_KEEP_ALIVE_TIMEOUT": setting} if setting else None
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with (
        start_server(sqlite_url(tmp_path / "k.db"), log_dir=tmp_path, env=env) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock,
    ):
        sock.sendall(request)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        time.sleep(idle)  # idle, as a proxy's pooled connection is between requests
        if kept:
            sock.sendall(request)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        else:
            assert sock.recv(65536) == b""  # the server closed it


def test_a_server_stopping_during_searches_shuts_down_cleanly(tmp_path: Path) -> None:
    """Searches that scan run in threads on SQLite: stopped while some ran and more waited,
    the app's shutdown closed their connections under them and failed ("cannot rollback"),
    past the shutdown timeout. Queued ones are dropped and running ones interrupted. (Here
    the scans are short and this passed on the old code too; a review's script showed the
    failure with 30,000 users and 3 s scans.)"""
    import signal
    import subprocess
    import threading

    from scimd.store import migrate
    from scimd.store.directory import Directory

    url = sqlite_url(tmp_path / "scan.db")
    creds = create_bearer_app(url, "s")
    engine = create_engine(url)
    migrate.ensure_current(engine)
    d = Directory(engine)
    try:
        for i in range(8000):
            d.create("User", {"userName": f"u{i}", "displayName": f"User {i}"}, audit.CLI, "x")
    finally:
        d.close()
        engine.dispose()
    slow = " or ".join(f'displayName co "zq{i}"' for i in range(200))
    headers = {"Authorization": f"Bearer {creds.client_secret}"}
    with start_server(url, log_dir=tmp_path, env={"SCIMD_SHUTDOWN_TIMEOUT": "1"}) as server:

        def scan() -> None:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(
                    f"{server.scim_url}/Users",
                    params={"filter": slow, "count": 1},
                    headers=headers,
                    timeout=60,
                )

        threads = [threading.Thread(target=scan) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.5)  # the scans are under way (a bound of the test, not a measurement)
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the server did not stop")
        for t in threads:
            t.join(timeout=60)
        log = server.stderr_text()
    assert "Application shutdown complete" in log, log[-3000:]
    assert "shutdown failed" not in log


def test_a_scim_request_to_the_wrong_base_is_told_the_right_one(
    client: tuple[TestClient, str],
) -> None:
    """A Tenant URL without /scim/v2 (https://HOST/, https://HOST/scim) got a bare plain-text
    "Not Found", and Entra's Test Connection failed without saying why."""
    c, token = client
    h = {"Authorization": f"Bearer {token}"}
    for path in ("/Users", "/scim/Users", "/scim", "/scim/v1/Users", "/v2/Groups"):
        r = c.get(path, headers=h)
        assert r.status_code == 404, path
        assert r.headers["content-type"].startswith("application/scim+json"), path
        assert "SCIM base is http://testserver/scim/v2/" in r.json()["detail"], path
    other = c.get("/favicon.ico")
    assert (other.status_code, other.text) == (404, "Not Found")


def test_healthz_fails_when_the_database_file_is_gone(tmp_path: Path) -> None:
    """With the SQLite file deleted under it, /healthz said 200 "ok" (SELECT 1 reads no
    table) while every SCIM request got a 503: a load balancer kept sending traffic."""
    url = f"sqlite:///{tmp_path / 'hz.db'}"
    with start_server(url, log_dir=tmp_path) as server:
        assert httpx.get(f"{server.root_url}/healthz", timeout=20).status_code == 200
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / f"hz.db{suffix}").unlink(missing_ok=True)
        r = httpx.get(f"{server.root_url}/healthz", timeout=20)
        assert r.status_code == 503 and "removed or replaced" in r.json()["detail"], r.text


def test_sighup_stops_the_server_as_sigterm_does(tmp_path: Path) -> None:
    """SIGHUP (a closed terminal, a log rotation script) killed the server at once: the
    access log lines of its last requests were lost and the WAL was not checkpointed."""
    import signal
    import subprocess

    url = f"sqlite:///{tmp_path / 'hup.db'}"
    with start_server(url, log_dir=tmp_path) as server:
        for _ in range(3):
            assert httpx.get(f"{server.scim_url}/Users", timeout=20).status_code == 401
        server.process.send_signal(signal.SIGHUP)
        try:
            server.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the server did not stop")
        log = server.stderr_text()
    assert "Application shutdown complete" in log, log[-3000:]
    assert log.count('"path":"/scim/v2/Users"') == 3, log[-3000:]


def test_a_log_level_above_info_leaves_the_access_lines_out(tmp_path: Path) -> None:
    """From an audit: with log_level = "warning" (the README's own example) every request still
    wrote its "info" access line; a log shipper filtering by level got them anyway."""
    engine = create_engine(f"sqlite:///{tmp_path / 'quiet.db'}")
    for level, lines in (("warning", 0), ("info", 1), ("DEBUG", 1)):
        stream = io.BytesIO()
        app = create_app(Settings(log_level=level), engine, log_stream=stream)
        with TestClient(app) as c:
            c.get("/scim/v2/Users")  # a 401, logged as any request
        assert len(stream.getvalue().decode().splitlines()) == lines, level


def test_error_replies_carry_the_request_id(client: tuple[TestClient, str]) -> None:
    """An error is what an operator looks up in the logs, by the reply's X-Request-Id: a 401,
    404 or 400 must carry it as a 200 does, and it must be the id the access line names."""
    c, token = client
    h = {"Authorization": f"Bearer {token}"}
    replies = [
        c.get("/scim/v2/Users"),
        c.get("/scim/v2/Users/no-such-user", headers=h),
        c.get("/scim/v2/Users", params={"filter": "userName eq"}, headers=h),
        c.get("/scim/v2/Users", headers=h),
    ]
    assert [r.status_code for r in replies] == [401, 404, 400, 200]
    ids = [r.headers.get("x-request-id") for r in replies]
    assert all(ids) and len(set(ids)) == 4, ids


def test_two_app_instances_hand_out_different_request_ids(tmp_path: Path) -> None:
    """Audit records and log lines name requests by id: a restarted server (or a second
    process on the same database) must not reuse the ids of the first."""
    engine = create_engine(f"sqlite:///{tmp_path / 'ids.db'}")
    ids = []
    for _ in range(2):
        with TestClient(create_app(Settings(), engine)) as c:
            ids.append(c.get("/scim/v2/Users").headers["x-request-id"])
    assert ids[0] != ids[1]


def test_the_log_line_of_a_500_names_the_replys_request_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 500 tells the client its request id identifies it in the logs: the traceback's line
    must carry that id, or the operator cannot find it."""

    async def broken(self: Scim, request: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Scim, "handle", broken)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("scimd.web")
    logger.addHandler(handler)
    try:
        app = create_app(Settings(), create_engine(f"sqlite:///{tmp_path / 'bug.db'}"))
        with TestClient(app, raise_server_exceptions=False) as c:
            r = c.get("/scim/v2/Users")
    finally:
        logger.removeHandler(handler)
    assert r.status_code == 500
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    crashed = [line for line in lines if line["msg"].startswith("unhandled error")]
    assert len(crashed) == 1 and "a bug" in crashed[0]["exc"]
    assert crashed[0]["request_id"] == r.headers["x-request-id"]


def test_a_clients_long_request_id_is_logged_cut(tmp_path: Path) -> None:
    """A client's X-Request-Id is logged beside the server's, cut to 64 characters: a client
    must not be able to write lines of kilobytes into the operator's log."""
    stream = io.BytesIO()
    app = create_app(
        Settings(), create_engine(f"sqlite:///{tmp_path / 'cut.db'}"), log_stream=stream
    )
    with TestClient(app) as c:
        c.get("/scim/v2/Users", headers={"X-Request-Id": "x" * 5000})
    (line,) = stream.getvalue().decode().splitlines()
    assert json.loads(line)["client_request_id"] == "x" * 64


def test_metrics_count_searches_apart_from_resources(client: tuple[TestClient, str]) -> None:
    """POST /Users/.search is a search, not a request about one user: counted under
    /Users/{id}, its latencies would hide among the single-resource reads."""
    c, token = client
    h = {"Authorization": f"Bearer {token}"}
    search = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]}
    assert c.post("/scim/v2/Users/.search", json=search, headers=h).status_code == 200
    text = c.get("/metrics").text
    assert (
        'scimd_requests_total{method="POST",route="/scim/v2/Users/.search",status="200"} 1.0'
        in text
    )
    assert 'route="/scim/v2/Users/{id}"' not in text


def test_retry_after_of_a_429_is_the_wait_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 429 for too many failed authentications says "retry in N s": its Retry-After must
    be that N (the seconds until the oldest failure leaves the minute), not a fixed 60."""
    now = [1000.0]
    monkeypatch.setattr(security, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    engine = create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    app = create_app(Settings(auth_failures_per_minute=2), engine)
    bad = {"Authorization": "Bearer no"}
    with TestClient(app) as c:
        assert [c.get("/scim/v2/Users", headers=bad).status_code for _ in range(2)] == [401] * 2
        now[0] += 20.5  # the first failure leaves the window in 39.5 s
        r = c.get("/scim/v2/Users", headers=bad)
    assert r.status_code == 429
    said = re.search(r"retry in (\d+) s", r.json()["detail"])
    assert said is not None and said.group(1) == "40"
    assert r.headers["retry-after"] == "40"
