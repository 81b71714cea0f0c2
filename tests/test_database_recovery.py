"""A server on PostgreSQL recovers when the database drops its connections.

PostgreSQL restarts, failovers and idle-session timeouts end connections under a running
server. A request that meets a dead connection may fail (with a SCIM error, 503: retry), but
the server must replace the connection, not keep failing on it.
"""

from __future__ import annotations

import json
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from support.freezing_proxy import FreezingProxy
from support.live_server import create_app, provisioned_server, start_server


def _drop_connections(database_url: str) -> int:
    """End every session of the server's database (what a PostgreSQL restart does to them)."""
    url = sa.engine.make_url(database_url)
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            ended = conn.execute(
                sa.text(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                    "FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": url.database},
            ).scalar_one()
    finally:
        admin.dispose()
    return int(ended)


def test_recovers_after_connections_are_dropped(postgres_url: str, tmp_path: Path) -> None:
    """The connections the database ended while they were idle are replaced before they are
    used: not one request fails once the database is back (each idle connection slot failed
    one request with a 503 after a restart)."""
    with provisioned_server(postgres_url, log_dir=tmp_path) as server:
        headers = {"Authorization": f"Bearer {server.token}"}
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as c:
            ids = []
            for i in range(24):
                r = c.post("/Users", json={"userName": f"before{i}@x.com"})
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
            # Open every connection slot: requests at once.
            with ThreadPoolExecutor(16) as pool:
                got = list(
                    pool.map(
                        lambda i: (
                            httpx.get(
                                f"{server.base_url}/Users/{ids[i % 24]}",
                                headers=headers,
                                timeout=30,
                            ).status_code
                        ),
                        range(64),
                    )
                )
            assert set(got) == {200}
            assert _drop_connections(postgres_url) > 1
            time.sleep(0.5)  # the ended sessions' notices reach their sockets

            statuses = []
            for i in range(24):
                statuses.append(c.post("/Users", json={"userName": f"after{i}@x.com"}).status_code)
                statuses.append(c.get(f"/Users/{ids[i]}").status_code)
            assert statuses == [201, 200] * 24, statuses
            body = c.get("/Users/does-not-exist").json()
            assert body["status"] == "404"


def test_a_silent_database_is_answered_503_and_then_recovered(
    postgres_url: str, tmp_path: Path
) -> None:
    """A database that stops answering (a stopped server, a network path that drops
    everything) held every request, and every later one queued behind it, for as long as the
    clients waited. Now a call waits at most ``database_timeout`` seconds: its connections are
    closed and the request answered 503; requests queued for a connection, and new
    connections the silent server never answers, end the same way. Nothing sent meanwhile is
    saved, and the server recovers when the database answers again."""
    url = sa.engine.make_url(postgres_url)
    creds = create_app(postgres_url, "entra")
    headers = {"Authorization": f"Bearer {creds.client_secret}"}
    with closing(FreezingProxy(url.host or "127.0.0.1", url.port or 5432)) as proxy:
        via_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        env = {"SCIMD_DATABASE_TIMEOUT": "2", "SCIMD_DATABASE_CONNECTIONS": "2"}
        with (
            start_server(via_proxy, log_dir=tmp_path, env=env) as server,
            httpx.Client(base_url=server.scim_url, headers=headers, timeout=120) as c,
        ):
            first = c.post("/Users", json={"userName": "before@x.com"})
            assert first.status_code == 201, first.text
            user_id = first.json()["id"]
            portal = httpx.Client(base_url=server.root_url, timeout=120)
            page = portal.get("/admin/login").text
            csrf = re.search(r'name="csrf" value="([^"]+)"', page)
            assert csrf is not None

            with ThreadPoolExecutor(4) as pool:  # open both connection slots
                opened = list(pool.map(lambda _: c.get(f"/Users/{user_id}").status_code, range(8)))
            assert opened == [200] * 8

            proxy.freeze()
            # The portal's queries run in its two threads: each page is answered, and the
            # thread's connections are shut down so that it is free again.
            signin = portal.post(
                "/admin/login",
                data={"username": "admin", "password": "x" * 12, "csrf": csrf.group(1)},
            )
            assert signin.status_code == 503, signin.text
            # The portal's own page (it was SCIM's JSON), saying what happened.
            assert signin.headers["content-type"].startswith("text/html")
            assert "did not answer within 2 s" in signin.text
            assert portal.get("/admin/login").status_code == 503

            def request(i: int) -> httpx.Response:
                with httpx.Client(headers=headers, timeout=120) as own:
                    if i % 3 == 0:
                        return own.get(f"{server.scim_url}/Users/{user_id}")
                    if i % 3 == 1:
                        return own.post(
                            f"{server.scim_url}/Users", json={"userName": f"during{i}@x.com"}
                        )
                    return own.get(f"{server.root_url}/healthz")

            # Twice the connection slots: a GET and a POST take the two slots and wait on the
            # silent database; the four sent after them queue for a slot, then for a new
            # connection the database never answers.
            with ThreadPoolExecutor(6) as pool:
                first = [pool.submit(request, i) for i in (0, 1)]
                time.sleep(0.5)
                queued = [pool.submit(request, i) for i in range(2, 6)]
                replies = [f.result() for f in first + queued]
            assert [r.status_code for r in replies] == [503] * 6, [r.text for r in replies]
            scim_errors = [r.json() for r in replies if r.url.path.startswith("/scim/")]
            assert all(e["status"] == "503" for e in scim_errors)
            # Cut off in a slot (a request that had to open a connection instead is told the
            # database is unavailable: the silent server never completes the connection).
            cut = [r.json()["detail"] for r in replies[:2]]
            assert any("did not answer within 2 s" in d for d in cut), cut

            proxy.thaw()
            assert c.get(f"/Users/{user_id}").status_code == 200
            # The portal too (its threads stayed stuck on their connections, and the page
            # was a 503 until the server was killed: a stopping server waited for them).
            assert portal.get("/admin/login").status_code == 200
            portal.close()
            found = c.get("/Users", params={"filter": 'userName sw "during"'}).json()
            assert found["totalResults"] == 0  # nothing sent while frozen was saved
            after = c.post("/Users", json={"userName": "after@x.com"})
            assert after.status_code == 201, after.text
            assert httpx.get(f"{server.root_url}/healthz").status_code == 200
        assert server.process.returncode != -signal.SIGKILL  # it stopped when asked to
        log = server.stderr_text()
        assert "waited over 2 s" in log
        watchdog = [json.loads(x) for x in log.splitlines() if "waited over 2 s" in x]
        assert all("request_id" not in w for w in watchdog), watchdog  # no request's line
        # Each error line names its request, as the access line and the reply do.
        errors = [
            json.loads(line)
            for line in log.splitlines()
            if line.startswith("{") and "database unavailable on" in line
        ]
        scim_ids = {r.headers["x-request-id"] for r in replies if r.url.path.startswith("/scim/")}
        assert scim_ids <= {e.get("request_id") for e in errors}, (scim_ids, errors)


def test_a_write_lock_held_past_the_busy_timeout_is_an_operational_error(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE runs in the engine's begin hook, outside SQLAlchemy's statement
    handling: past the busy timeout its "database is locked" escaped as a bare sqlite3 error,
    a traceback from the command line and a 500 from the server, instead of what callers
    turn into one line or a 503."""
    import sqlite3

    import sqlalchemy as sa

    from scimd.store import migrate
    from scimd.store.engine import create_engine

    path = tmp_path / "held.db"
    engine = create_engine(f"sqlite:///{path}")
    migrate.ensure_current(engine)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA busy_timeout=50")
            conn.commit()  # the PRAGMA's autobegun transaction
            conn.execution_options(sqlite_begin="IMMEDIATE")
            with pytest.raises(sa.exc.OperationalError, match="database is locked"):
                conn.begin()
            # What the server's writes now do on every try: fail at once, and leave the
            # connection able to begin again (SQLAlchemy's "in begin" flag stayed set).
            conn.execution_options(sqlite_begin="IMMEDIATE NOWAIT")
            with pytest.raises(sa.exc.OperationalError, match="database is locked"):
                conn.begin()
            conn.execution_options(sqlite_begin="DEFERRED")
            conn.execute(sa.text("SELECT 1"))
            assert conn.in_transaction()  # begun by itself
            conn.rollback()
    finally:
        holder.rollback()
        holder.close()
        engine.dispose()


def test_a_database_gone_is_a_503_everywhere_with_few_tracebacks(
    postgres_url: str, tmp_path: Path
) -> None:
    """With the database gone, the SCIM API, the token endpoint and the portal answer 503
    with Retry-After (the token endpoint and the portal answered 500), and the log holds one
    traceback, not one per request (a 20 s outage wrote 70 MB of them)."""
    from support.live_server import create_app

    cc = create_app(postgres_url, "cc", grant="client_credentials", scopes=["USER SYNC"])
    form = {
        "grant_type": "client_credentials",
        "client_id": cc.client_id,
        "client_secret": cc.client_secret,
    }
    with provisioned_server(postgres_url, log_dir=tmp_path) as server:
        token_url = f"{server.root_url}/oauth2/server/token"
        assert httpx.post(token_url, data=form, timeout=30).status_code == 200
        url = sa.engine.make_url(postgres_url)
        admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{url.database}" WITH (FORCE)'))
        admin.dispose()
        headers = {"Authorization": f"Bearer {server.token}"}
        for _ in range(5):
            r = httpx.post(token_url, data=form, timeout=30)
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "temporarily_unavailable"
            assert r.headers["retry-after"] == "5"
            r = httpx.get(f"{server.base_url}/Users", headers=headers, timeout=30)
            assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
        # A portal page answers 503 with its request id, on a connection that stays usable
        # (it was a 500 whose connection uvicorn then closed: the next request was reset).
        with httpx.Client(base_url=server.root_url, timeout=30) as portal:
            for _ in range(2):
                r = portal.get("/admin/setup", params={"token": "x"})
                assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
                assert r.headers["x-request-id"]
        log = server.process.stderr_text()
        assert log.count("database unavailable on") >= 10
        assert log.count('"exc":') == 1, log[-3000:]  # one record with a traceback


def test_a_write_lock_held_by_another_process_stops_no_read(tmp_path: Path) -> None:
    """While another process holds SQLite's write lock (a second server on the file, a
    command, a backup), reads and health checks are answered at once, and the write waiting
    for the lock completes once it is free. The event loop used to wait inside SQLite's busy
    handler: every request of the server waited with it, and a read whose "last used" write
    met the lock failed with a 503 after 30 s."""
    import sqlite3

    path = tmp_path / "shared.db"
    url = f"sqlite:///{path}"
    with provisioned_server(url, log_dir=tmp_path) as server:
        headers = {"Authorization": f"Bearer {server.token}"}
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        held = True
        try:
            with ThreadPoolExecutor(1) as pool:
                post = pool.submit(
                    httpx.post,
                    f"{server.base_url}/Users",
                    json={"userName": "waited@x.com"},
                    headers=headers,
                    timeout=60,
                )
                time.sleep(0.3)  # the POST is waiting for the lock
                # Answered while the lock is still held (a 20 s bound only to fail, not hang).
                assert httpx.get(f"{server.root_url}/healthz", timeout=20).status_code == 200
                r = httpx.get(f"{server.base_url}/Users?count=1", headers=headers, timeout=20)
                assert r.status_code == 200, r.text
                assert not post.done()
                holder.rollback()
                held = False
                assert post.result().status_code == 201
        finally:
            if held:
                holder.rollback()
            holder.close()
        r = httpx.get(
            f"{server.base_url}/Users",
            params={"filter": 'userName eq "waited@x.com"'},
            headers=headers,
            timeout=20,
        )
        assert r.json()["totalResults"] == 1


def test_a_write_refused_for_another_process_lock_says_so(tmp_path: Path) -> None:
    """The 503 a write gets when another process held SQLite's write lock past the wait said
    only "the database is unavailable": an operator could not tell it from a lost disk."""
    import sqlite3

    import sqlalchemy as sa

    from scimd.store.engine import create_engine
    from scimd.web.outage import unavailable_detail

    url = f"sqlite:///{tmp_path / 'locked.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
    holder = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA busy_timeout=0")
            conn.commit()
            with pytest.raises(sa.exc.OperationalError) as refused, conn.begin():
                conn.execute(sa.text("INSERT INTO t VALUES (1)"))
    finally:
        holder.rollback()
        holder.close()
        engine.dispose()
    assert "locked by another process" in unavailable_detail(refused.value)
    assert unavailable_detail(sa.exc.OperationalError("x", None, OSError("gone"))) == (
        "the database is unavailable; retry the request"
    )


def test_database_timeout_bounds_the_wait_for_another_process_lock(tmp_path: Path) -> None:
    """A write waited a fixed 30 s for a write lock another process held, whatever
    `database_timeout` said (it bounded PostgreSQL only); with it set to 1, the write gets its
    503 about a second later, creates nothing, and the next write once the lock is free works."""
    import sqlite3

    path = tmp_path / "held.db"
    url = f"sqlite:///{path}"
    env = {"SCIMD_DATABASE_TIMEOUT": "1"}
    with provisioned_server(url, log_dir=tmp_path, env=env) as server:
        headers = {"Authorization": f"Bearer {server.token}"}
        httpx.get(f"{server.base_url}/Users?count=1", headers=headers, timeout=20)  # last used
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            # A 20 s bound only to fail rather than hang: the old wait was 30 s.
            r = httpx.post(
                f"{server.base_url}/Users",
                json={"userName": "late@x.com"},
                headers=headers,
                timeout=20,
            )
        finally:
            holder.rollback()
            holder.close()
        assert r.status_code == 503, r.text
        assert "locked by another process" in r.json()["detail"]
        assert "Retry-After" in r.headers
        found = httpx.get(
            f"{server.base_url}/Users",
            params={"filter": 'userName eq "late@x.com"'},
            headers=headers,
            timeout=20,
        )
        assert found.json()["totalResults"] == 0
        again = httpx.post(
            f"{server.base_url}/Users",
            json={"userName": "late@x.com"},
            headers=headers,
            timeout=20,
        )
        assert again.status_code == 201, again.text


def test_a_full_disk_is_a_503_that_says_so_and_reads_go_on(tmp_path: Path) -> None:
    """A member change that filled the disk was a 500 (SQLite's own error, from statements run
    on the driver, was not taken for a database error), and the first read of a minute could
    fail on the "last used" bookkeeping. Now the write is a 503 naming the full disk, nothing
    of it is kept, and reads are answered. (A real SQLite file whose connections may not grow
    it past a few more pages: SQLite's own full-disk path.)"""
    from starlette.testclient import TestClient

    from scimd.auth import apps
    from scimd.settings import Settings
    from scimd.store import audit
    from scimd.store.engine import create_engine
    from scimd.store.migrate import ensure_current
    from scimd.web.app import create_app as make_app

    url = f"sqlite:///{tmp_path / 'full.db'}"
    seed = create_engine(url)
    ensure_current(seed)
    with seed.begin() as conn:
        _, token = apps.create_app(conn, "t", "bearer", ["API", "USER SYNC"], audit.CLI)
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(make_app(Settings(), create_engine(url))) as client:
        ids = [
            client.post("/scim/v2/Users", json={"userName": f"u{i}@x.com"}, headers=headers).json()[
                "id"
            ]
            for i in range(1500)
        ]
        gid = client.post("/scim/v2/Groups", json={"displayName": "g"}, headers=headers).json()[
            "id"
        ]
    with seed.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
    engine = create_engine(url)

    @sa.event.listens_for(engine, "connect")
    def _small_disk(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute(f"PRAGMA max_page_count={pages + 20}")

    with TestClient(make_app(Settings(), engine)) as client:
        body = {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": i} for i in ids]}],
        }
        r = client.patch(f"/scim/v2/Groups/{gid}", json=body, headers=headers)
        assert r.status_code == 503, r.text
        assert "disk is full" in r.json()["detail"] and "Retry-After" in r.headers
        got = client.get(f"/scim/v2/Groups/{gid}", headers=headers)
        assert got.status_code == 200 and not got.json().get("members"), got.text
        assert client.get(f"/scim/v2/Users/{ids[0]}", headers=headers).status_code == 200
    seed.dispose()
    engine.dispose()


def test_a_read_only_database_is_a_503_and_writes_resume_when_it_is_writable(
    postgres_url: str, tmp_path: Path
) -> None:
    """PostgreSQL set read-only (what managed services do when storage fills) made every write
    a 500 with a traceback; and once the database was writable again, the connections that
    had started read-only kept failing until scimd was restarted."""
    url = sa.engine.make_url(postgres_url)
    db = url.database
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with provisioned_server(postgres_url, log_dir=tmp_path) as server:
            headers = {"Authorization": f"Bearer {server.token}"}
            # An application whose first request comes while the database is read-only: its
            # "last used" bookkeeping made that read a 500.
            other = create_app(postgres_url, "second")
            with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as c:
                assert c.post("/Users", json={"userName": "before@x.com"}).status_code == 201
                with admin.connect() as conn:
                    conn.exec_driver_sql(
                        f'ALTER DATABASE "{db}" SET default_transaction_read_only = on'
                    )
                _drop_connections(postgres_url)  # sessions start anew, read-only
                time.sleep(0.5)
                for i in range(3):
                    r = c.post("/Users", json={"userName": f"during{i}@x.com"})
                    assert r.status_code == 503, r.text
                    assert "read-only" in r.json()["detail"] and "Retry-After" in r.headers
                assert c.get("/Users", params={"count": 1}).status_code == 200  # reads go on
                first = httpx.get(
                    f"{server.base_url}/Users",
                    params={"count": 1},
                    headers={"Authorization": f"Bearer {other.client_secret}"},
                    timeout=30,
                )
                assert first.status_code == 200, first.text
                with admin.connect() as conn:
                    conn.exec_driver_sql(
                        f'ALTER DATABASE "{db}" RESET default_transaction_read_only'
                    )
                statuses = [
                    c.post("/Users", json={"userName": f"after{i}@x.com"}).status_code
                    for i in range(20)
                ]
                # A connection opened while the database was read-only stays so (PostgreSQL
                # reads the default when a session starts): each is replaced after its first
                # refusal, so a few 503s may come first (at most one per connection slot).
                first_ok = statuses.index(201)
                assert first_ok <= 8 and statuses[first_ok:] == [201] * (20 - first_ok), statuses
                found = c.get("/Users", params={"filter": 'userName sw "during"'}).json()
                assert found["totalResults"] == 0
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{db}" RESET default_transaction_read_only')
        admin.dispose()


def test_a_damaged_sqlite_file_is_a_503_that_says_so(tmp_path: Path) -> None:
    """A damaged page ("database disk image is malformed") made every request that read it a
    500 with a traceback, and the portal's pages raw SCIM JSON when the database could not be
    used. Now a request is told that the file is damaged and must be restored from a backup,
    and the portal answers with its own page."""
    from starlette.testclient import TestClient

    from scimd.auth import apps
    from scimd.settings import Settings
    from scimd.store import audit
    from scimd.store.engine import create_engine
    from scimd.store.migrate import ensure_current
    from scimd.web.app import create_app as make_app

    path = tmp_path / "damaged.db"
    engine = create_engine(f"sqlite:///{path}")
    ensure_current(engine)
    with engine.begin() as conn:
        _, token = apps.create_app(conn, "t", "bearer", ["API", "USER SYNC"], audit.CLI)
        for i in range(300):  # users over several pages: the table's root is an inner page
            conn.exec_driver_sql(
                "INSERT INTO users (id, user_name, user_name_lower, created, last_modified,"
                " version, doc) VALUES (?, ?, ?, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z',"
                " 1, ?)",
                (f"id{i}", f"u{i}", f"u{i}", json.dumps({"userName": f"u{i}", "x": "y" * 200})),
            )
        root = conn.exec_driver_sql(
            "SELECT rootpage FROM sqlite_master WHERE name = 'users'"
        ).scalar_one()
        page_size = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    with path.open("r+b") as f:  # the page's header and cells: garbage
        f.seek((root - 1) * page_size)
        f.write(b"\x0d" + b"\xff" * (page_size - 1))
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(make_app(Settings(), create_engine(f"sqlite:///{path}"))) as client:
        r = client.get("/scim/v2/Users", params={"filter": 'title eq "x"'}, headers=headers)
        assert r.status_code == 503, r.text
        assert "damaged" in r.json()["detail"] and "backup" in r.json()["detail"]


def test_a_bulk_that_meets_an_outage_reports_what_it_saved(tmp_path: Path) -> None:
    """From a review: a Bulk whose later operation met a database outage (another process's
    lock held past database_timeout, a full disk) was answered 503 as a whole, "retry the
    request", though the operations before it were saved; a retry then met 409s for every
    POST that had worked. Now the BulkResponse holds each processed operation's result, the
    one that met the outage a 503, and the rest are not run (RFC 7644 §3.7.3). (The outage
    here: a real SQLite file whose connections may not grow it past a few more pages.)"""
    from starlette.testclient import TestClient

    from scimd.auth import apps
    from scimd.settings import Settings
    from scimd.store import audit
    from scimd.store.engine import create_engine
    from scimd.store.migrate import ensure_current
    from scimd.web.app import create_app as make_app

    url = f"sqlite:///{tmp_path / 'bulk.db'}"
    seed = create_engine(url)
    ensure_current(seed)
    with seed.begin() as conn:
        _, token = apps.create_app(conn, "t", "bearer", ["API", "USER SYNC"], audit.CLI)
    with seed.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
    engine = create_engine(url)

    @sa.event.listens_for(engine, "connect")
    def _small_disk(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute(f"PRAGMA max_page_count={pages + 40}")

    headers = {"Authorization": f"Bearer {token}"}
    ops = [
        {"method": "POST", "path": "/Users", "bulkId": f"b{i}", "data": {"userName": f"bl{i}@x"}}
        for i in range(1000)
    ]
    bulk = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops}
    with TestClient(make_app(Settings(), engine)) as client:
        r = client.post("/scim/v2/Bulk", json=bulk, headers=headers)
        assert r.status_code == 200, r.text
        results = r.json()["Operations"]
        statuses = [o["status"] for o in results]
        saved = statuses.index("503")
        # The operations not run are said to be so (they had no result: a client had to
        # count to find them).
        assert saved >= 1 and statuses == ["201"] * saved + ["503"] * (1000 - saved), statuses
        assert "disk is full" in results[saved]["response"]["detail"]
        assert "not run" in results[-1]["response"]["detail"]
        assert results[-1]["bulkId"] == "b999" and results[-1]["method"] == "POST"
    with seed.connect() as conn:
        made = conn.exec_driver_sql(
            "SELECT count(*) FROM users WHERE user_name LIKE 'bl%'"
        ).scalar_one()
    seed.dispose()
    engine.dispose()
    assert made == saved


def test_a_thread_write_after_a_read_only_spell_gets_a_new_connection(postgres_url: str) -> None:
    """The portal's and the commands' writes (a thread's own connection, not the server's
    runner): the session opened while PostgreSQL was read-only stays read-only, so it must be
    replaced after its refusal, or every later write of the thread is refused until a
    restart."""
    from scimd.store import audit
    from scimd.store.directory import Directory
    from scimd.store.engine import create_engine, is_read_only
    from scimd.store.migrate import ensure_current

    url = sa.engine.make_url(postgres_url)
    db = url.database
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    engine = create_engine(postgres_url)
    ensure_current(engine)
    d = Directory(engine)
    base = "http://scim.test/scim/v2"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{db}" SET default_transaction_read_only = on')
        engine.dispose()  # sessions start anew, read-only (as after a failover)
        with pytest.raises(sa.exc.DBAPIError) as refused:
            d.create("User", {"userName": "during@x.com"}, audit.CLI, base)
        assert is_read_only(refused.value)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{db}" RESET default_transaction_read_only')
        made = d.create("User", {"userName": "after@x.com"}, audit.CLI, base)
        assert made.resource is not None and made.resource["userName"] == "after@x.com"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{db}" RESET default_transaction_read_only')
        d.close()
        engine.dispose()
        admin.dispose()


def test_a_bulk_goes_on_after_one_lost_connection(postgres_url: str) -> None:
    """One PostgreSQL session ended under a Bulk (a restart, pg_terminate_backend) ended the
    whole request: 724 of 1,000 operations were not run, and the 200 reply did not say so.
    The operation that met it gets a 503; the next gets another connection, as the next
    request would, and the rest are run."""
    from starlette.testclient import TestClient

    from scimd.auth import apps
    from scimd.settings import Settings
    from scimd.store import audit
    from scimd.store.engine import create_engine
    from scimd.store.migrate import ensure_current
    from scimd.web.app import create_app as make_app

    seed = create_engine(postgres_url)
    ensure_current(seed)
    with seed.begin() as conn:
        _, token = apps.create_app(conn, "t", "bearer", ["API", "USER SYNC"], audit.CLI)
    with seed.begin() as conn:
        # The fifth POST's session ends under it, as pg_terminate_backend ends one.
        conn.exec_driver_sql(
            "CREATE FUNCTION end_session() RETURNS trigger AS $$ BEGIN"
            " IF NEW.user_name = 'lc4@x' THEN"
            " PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5);"
            " END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER end_session BEFORE INSERT ON users"
            " FOR EACH ROW EXECUTE FUNCTION end_session()"
        )
    engine = create_engine(postgres_url)
    ops = [
        {"method": "POST", "path": "/Users", "bulkId": f"b{i}", "data": {"userName": f"lc{i}@x"}}
        for i in range(20)
    ]
    bulk = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops}
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(make_app(Settings(), engine)) as client:
        r = client.post("/scim/v2/Bulk", json=bulk, headers=headers)
    assert r.status_code == 200, r.text
    statuses = [o["status"] for o in r.json()["Operations"]]
    assert statuses == ["201"] * 4 + ["503"] + ["201"] * 15, statuses
    with seed.connect() as conn:
        made = conn.execute(sa.text("SELECT count(*) FROM users WHERE user_name LIKE 'lc%'"))
        assert made.scalar_one() == 19
    seed.dispose()
    engine.dispose()


def test_a_session_timeout_of_postgresql_is_a_503(postgres_url: str) -> None:
    """idle_in_transaction_session_timeout (and PostgreSQL 17's transaction_timeout) end the
    session with an error psycopg raises as an InternalError (SQLSTATE 25P03): it was a 500
    "internal error" rather than a 503 to retry."""
    from scimd.store.engine import is_unavailable
    from scimd.web.outage import unavailable_detail

    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        conn.exec_driver_sql("SET idle_in_transaction_session_timeout = '50ms'")
        conn.exec_driver_sql("SELECT 1")  # a transaction begun, then left idle
        time.sleep(0.5)
        with pytest.raises(sa.exc.DBAPIError) as info:
            conn.exec_driver_sql("SELECT 1")
    engine.dispose()
    assert is_unavailable(info.value), repr(info.value)
    assert "retry" in unavailable_detail(info.value)


def test_postgresql_disk_full_is_named_as_such() -> None:
    """PostgreSQL's disk_full (SQLSTATE 53100, "could not extend file ... No space left on
    device") was told to clients as "the database is unavailable"; SQLite's was named."""
    import psycopg

    from scimd.store.engine import is_full, is_unavailable
    from scimd.web.outage import unavailable_detail

    err = sa.exc.OperationalError(
        "INSERT", {}, psycopg.errors.DiskFull("could not extend file: No space left on device")
    )
    assert is_full(err) and is_unavailable(err)
    assert "disk is full" in unavailable_detail(err)


def test_writes_to_a_sqlite_file_removed_under_the_server_are_refused(tmp_path: Path) -> None:
    """Removed under a running server, the database file took the writes that followed into
    the deleted file: 201, and lost. A new connection made an empty database at the path,
    which a restart then served as if empty. Writes and new connections are refused (503,
    saying what happened) and no file is made."""
    from starlette.testclient import TestClient

    from scimd.settings import Settings
    from scimd.store.engine import create_engine
    from scimd.web.app import create_app as make_app

    path = tmp_path / "gone.db"
    token = _sqlite_with_token(path)
    headers = {"Authorization": f"Bearer {token}"}
    engine = create_engine(f"sqlite:///{path}")
    with TestClient(make_app(Settings(), engine)) as client:
        r = client.post("/scim/v2/Users", json={"userName": "before@x"}, headers=headers)
        assert r.status_code == 201, r.text
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        r = client.post("/scim/v2/Users", json={"userName": "after@x"}, headers=headers)
        assert r.status_code == 503, r.text
        assert "removed or replaced" in r.json()["detail"]
        r = client.post("/scim/v2/Groups", json={"displayName": "g"}, headers=headers)
        assert r.status_code == 503, r.text
        assert client.get("/healthz").status_code == 503
    engine.dispose()
    assert not path.exists()


def test_a_bulk_meeting_another_process_lock_waits_for_it_once(tmp_path: Path) -> None:
    """From a review: the rule that lets a Bulk go on after one lost PostgreSQL connection
    took SQLite's errors (which carry no SQLSTATE) for lost connections: a Bulk meeting
    another process's write lock waited database_timeout twice before it stopped."""
    import sqlite3

    from starlette.testclient import TestClient

    from scimd.settings import Settings
    from scimd.store.engine import create_engine
    from scimd.web.app import create_app as make_app

    path = tmp_path / "locked.db"
    token = _sqlite_with_token(path)
    ops = [
        {"method": "POST", "path": "/Users", "bulkId": f"b{i}", "data": {"userName": f"lk{i}@x"}}
        for i in range(3)
    ]
    bulk = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops}
    engine = create_engine(f"sqlite:///{path}", timeout=1)
    with TestClient(make_app(Settings(database_timeout=1), engine)) as client:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            r = client.post(
                "/scim/v2/Bulk", json=bulk, headers={"Authorization": f"Bearer {token}"}
            )
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    engine.dispose()
    results = r.json()["Operations"]
    assert [o["status"] for o in results] == ["503"] * 3, r.text
    assert "locked by another process" in results[0]["response"]["detail"]
    assert all("not run" in o["response"]["detail"] for o in results[1:]), r.text


def test_a_failed_statement_does_not_put_its_parameters_in_the_log(any_database_url: str) -> None:
    """A database error's message (logged with every outage's traceback) listed the
    statement's parameters: a user's row, its emails and part of a password's digest."""
    from scimd.store.engine import create_engine

    engine = create_engine(any_database_url)
    with pytest.raises(sa.exc.DBAPIError) as info, engine.connect() as conn:
        conn.execute(sa.text("SELECT * FROM no_such_table WHERE a = :p"), {"p": "ada@private"})
    engine.dispose()
    assert "no_such_table" in str(info.value) and "ada@private" not in str(info.value)


def _sqlite_with_token(path: Path) -> str:
    """A SQLite database at ``path`` at the newest schema, and a bearer token for it."""
    from scimd.auth import apps
    from scimd.store import audit
    from scimd.store.engine import create_engine
    from scimd.store.migrate import ensure_current

    seed = create_engine(f"sqlite:///{path}")
    ensure_current(seed)
    with seed.begin() as conn:
        _, token = apps.create_app(conn, "t", "bearer", ["API", "USER SYNC"], audit.CLI)
    seed.dispose()
    return token
