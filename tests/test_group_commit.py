"""Group commit on SQLite: writes made together share a transaction but not their fate.

Each write that joins the event loop's open transaction runs in a savepoint: a failing write
leaves nothing behind (no row, no audit entry, no counter change) while the others commit; a
reply is sent only after the COMMIT; reads never see the open transaction.
"""

from __future__ import annotations

import asyncio
import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from scimd.auth import apps
from scimd.scim.errors import NotFound, ScimError
from scimd.settings import Settings
from scimd.store import audit as A
from scimd.store.directory import Directory
from scimd.store.engine import create_engine, is_full
from scimd.store.migrate import ensure_current
from scimd.store.tables import audit, counters, users
from scimd.web import batching
from scimd.web.app import create_app
from scimd.web.batching import GroupCommit
from support.live_server import provisioned_server

CLI = A.Actor("cli", "test")
BASE = "http://test/scim/v2"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'g.db'}"


@pytest.fixture
def directory(db_url: str) -> Iterator[Directory]:
    engine = create_engine(db_url)
    ensure_current(engine)
    d = Directory(engine)
    yield d
    d.close()
    engine.dispose()


def _count(engine: sa.Engine, q: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(q).scalar_one()


def test_a_failing_write_in_a_batch_undoes_only_itself(directory: Directory) -> None:
    engine = directory.engine
    directory.create("User", {"userName": "taken@x.example"}, CLI, BASE)
    audits = _count(engine, sa.select(sa.func.count()).select_from(audit))
    tx = directory.begin_batch()
    first = directory.create("User", {"userName": "one@x.example"}, CLI, BASE)
    with pytest.raises(ScimError) as e:
        directory.create("User", {"userName": "TAKEN@x.example"}, CLI, BASE)
    assert e.value.status == 409
    second = directory.create("User", {"userName": "two@x.example"}, CLI, BASE)
    # Not committed yet: reads (another connection) do not see the batch.
    assert first.resource is not None and second.resource is not None
    with pytest.raises(NotFound):
        directory.get("User", first.resource["id"], BASE)
    directory.end_batch(tx)
    assert directory.get("User", second.resource["id"], BASE)[0]["userName"] == "two@x.example"
    names = {r[0] for r in engine.connect().execute(sa.select(users.c.user_name))}
    assert names == {"taken@x.example", "one@x.example", "two@x.example"}
    assert _count(engine, sa.select(sa.func.count()).select_from(audit)) == audits + 2
    total = _count(
        engine, sa.select(sa.func.sum(counters.c.value)).where(counters.c.name == "User")
    )
    assert total == 3


def test_a_failure_inside_a_write_rolls_back_its_earlier_statements(
    directory: Directory,
) -> None:
    """A write that fails after it changed rows (here: after its insert) leaves nothing."""
    tx = directory.begin_batch()
    with pytest.raises(RuntimeError), directory.write() as conn:
        directory.create("User", {"userName": "gone@x.example"}, CLI, BASE)
        assert conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one() == 1
        raise RuntimeError("fails after its insert")
    directory.create("User", {"userName": "kept@x.example"}, CLI, BASE)
    directory.end_batch(tx)
    names = {r[0] for r in directory.engine.connect().execute(sa.select(users.c.user_name))}
    assert names == {"kept@x.example"}


async def _call(app: Any, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    raw = orjson.dumps(body) if body is not None else b""
    headers = [(b"authorization", f"Bearer {token}".encode()), (b"host", b"test")]
    if body is not None:
        headers.append((b"content-type", b"application/scim+json"))
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "scheme": "http",
        "server": ("test", 80),
        "client": ("127.0.0.1", 1),
        "root_path": "",
        "http_version": "1.1",
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    out: dict[str, Any] = {}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        else:
            out["body"] = out.get("body", b"") + message.get("body", b"")

    await app(scope, receive, send)
    return out["status"], orjson.loads(out["body"]) if out.get("body") else None


def test_concurrent_writes_share_a_commit_and_each_reply_is_durable(db_url: str) -> None:
    """Writes started together (one of them failing) answer only once committed."""
    engine = create_engine(db_url)
    log = io.BytesIO()
    app = create_app(Settings(database_url=db_url), engine, log_stream=log)
    with engine.begin() as conn:
        _, token = apps.create_app(conn, "t", "bearer", ["USER SYNC"], CLI)
    other = create_engine(db_url)  # a second process's view of the file
    commits: list[int] = []
    scim = app.scim  # type: ignore[attr-defined]
    end_batch = scim.directory.end_batch

    def counting_end_batch(tx: sa.RootTransaction) -> None:
        commits.append(1)
        end_batch(tx)

    scim.directory.end_batch = counting_end_batch

    async def scenario() -> list[tuple[int, Any]]:
        async def post_then_check(name: str) -> tuple[int, Any]:
            status, body = await _call(app, "POST", "/scim/v2/Users", token, {"userName": name})
            if status == 201:  # committed before the reply: another connection sees it
                with other.connect() as conn:
                    found = conn.execute(
                        sa.select(users.c.id).where(users.c.id == body["id"])
                    ).first()
                assert found is not None
            return status, body

        await _call(app, "POST", "/scim/v2/Users", token, {"userName": "dup@x.example"})
        names = [f"u{i}@x.example" for i in range(12)] + ["DUP@x.example"]
        return await asyncio.gather(*(post_then_check(n) for n in names))

    results = asyncio.run(scenario())
    statuses = [s for s, _ in results]
    assert statuses.count(201) == 12 and statuses.count(409) == 1
    assert len(commits) < 13  # at least some of the 12 writes shared a COMMIT
    with other.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one() == 13
    other.dispose()
    engine.dispose()


def test_a_failed_commit_fails_every_write_in_it(directory: Directory) -> None:
    async def scenario() -> list[Any]:
        group = GroupCommit(directory)
        real_end = directory.end_batch

        def failing_end(tx: sa.RootTransaction) -> None:
            tx.rollback()
            directory._local.batch = False
            raise OSError("disk full")

        directory.end_batch = failing_end  # type: ignore[method-assign]
        try:

            def make(name: str) -> Any:
                return lambda: directory.create("User", {"userName": name}, CLI, BASE)

            return await asyncio.gather(
                *(group.run(make(f"x{i}@x.example")) for i in range(3)), return_exceptions=True
            )
        finally:
            directory.end_batch = real_end  # type: ignore[method-assign]

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, ScimError) and o.status == 503 for o in outcomes), outcomes
    assert _count(directory.engine, sa.select(sa.func.count()).select_from(users)) == 0


def test_a_write_that_fills_the_disk_fails_its_whole_batch_not_silently(
    directory: Directory,
) -> None:
    """On a full disk SQLite rolls back the whole transaction, not one statement: the batch's
    other writes went with it, the failed write's ROLLBACK TO raised "no such savepoint" in
    place of "disk is full", and the COMMIT of nothing answered the others as saved (a 201
    for a user that was not stored). Writes later in the turn committed on their own."""
    d = directory
    tx = d.begin_batch()
    ids = [d.create("User", {"userName": f"u{i}"}, CLI, BASE).resource["id"] for i in range(2000)]
    gid = d.create("Group", {"displayName": "g"}, CLI, BASE).resource["id"]
    d.end_batch(tx)
    driver = d._thread_connection().connection.driver_connection
    assert driver is not None
    pages = driver.execute("PRAGMA page_count").fetchone()[0]
    driver.execute(f"PRAGMA max_page_count={pages + 30}")  # room for a user, not 2,000 members
    patch = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": x} for x in ids]}],
    }

    async def scenario() -> list[Any]:
        group = GroupCommit(d)
        return await asyncio.gather(
            group.run(lambda: d.create("User", {"userName": "before@x.example"}, CLI, BASE)),
            group.run(lambda: d.patch("Group", gid, patch, CLI, BASE, None)),
            group.run(lambda: d.create("User", {"userName": "after@x.example"}, CLI, BASE)),
            return_exceptions=True,
        )

    before, patched, after = asyncio.run(scenario())
    assert is_full(patched), patched  # the real error, not "no such savepoint"
    assert isinstance(before, ScimError) and before.status == 503, before
    assert isinstance(after, ScimError) and after.status == 503, after
    names = sa.select(sa.func.count()).select_from(users).where(users.c.user_name.like("%@x%"))
    assert _count(d.engine, names) == 0
    driver.execute(f"PRAGMA max_page_count={pages + 100_000}")  # space again: writes work
    d.create("User", {"userName": "later@x.example"}, CLI, BASE)
    assert _count(d.engine, names) == 1


def _checked_at_commit(engine: sa.Engine) -> None:
    """A table whose foreign key SQLite checks at COMMIT: an orphan row in it makes the COMMIT
    fail for real, as a full or read-only disk does."""
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
        conn.execute(
            sa.text(
                "CREATE TABLE child (pid INTEGER REFERENCES parent (id)"
                " DEFERRABLE INITIALLY DEFERRED)"
            )
        )


def test_writes_work_again_after_a_commit_that_failed(directory: Directory) -> None:
    """A COMMIT that fails for real (here a deferred foreign key, checked at COMMIT; a full or
    read-only disk fails the same way) left its transaction on the connection, and every
    later write failed with a 500 until a restart. The failed batch leaves nothing; the next
    one commits."""
    _checked_at_commit(directory.engine)

    def orphan_and_user() -> Any:
        with directory.write() as conn:
            conn.execute(sa.text("INSERT INTO child (pid) VALUES (42)"))  # no parent 42
        return directory.create("User", {"userName": "lost@x.example"}, CLI, BASE)

    async def scenario() -> list[Any]:
        group = GroupCommit(directory)
        first = await asyncio.gather(group.run(orphan_and_user), return_exceptions=True)
        second = await group.run(
            lambda: directory.create("User", {"userName": "kept@x.example"}, CLI, BASE)
        )
        return [*first, second]

    failed, kept = asyncio.run(scenario())
    assert isinstance(failed, ScimError) and failed.status == 503, failed
    assert kept.resource["userName"] == "kept@x.example"
    names = sa.select(users.c.user_name)
    with directory.engine.connect() as conn:
        assert [r[0] for r in conn.execute(names)] == ["kept@x.example"]
        assert conn.execute(sa.text("SELECT count(*) FROM child")).scalar_one() == 0


def test_bulk_and_concurrent_writes_are_committed_before_the_reply(tmp_path: Path) -> None:
    """Over real HTTP: bulk and plain writes are visible to another client right after."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    with provisioned_server(url, log_dir=tmp_path) as server:
        headers = {"Authorization": f"Bearer {server.token}"}

        async def run() -> None:
            async with httpx.AsyncClient(base_url=server.base_url, headers=headers) as c:
                bulk = {
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                    "Operations": [
                        {
                            "method": "POST",
                            "path": "/Users",
                            "bulkId": f"b{i}",
                            "data": {"userName": f"bulk{i}@x.example"},
                        }
                        for i in range(5)
                    ],
                }
                posts = [c.post("/Users", json={"userName": f"p{i}@x.example"}) for i in range(8)]
                replies = await asyncio.gather(c.post("/Bulk", json=bulk), *posts)
                assert all(r.status_code in (200, 201) for r in replies), [r.text for r in replies]
                async with httpx.AsyncClient(base_url=server.base_url, headers=headers) as c2:
                    r = await c2.get("/Users", params={"count": 0})
                    assert r.json()["totalResults"] == 13

        asyncio.run(run())


def test_a_write_outside_a_batch_works_again_after_its_commit_failed(
    directory: Directory,
) -> None:
    """The command line's and the portal's writes are their own transactions: the same."""
    _checked_at_commit(directory.engine)
    with pytest.raises(sa.exc.IntegrityError), directory.write() as conn:
        conn.execute(sa.text("INSERT INTO child (pid) VALUES (42)"))
    made = directory.create("User", {"userName": "after@x.example"}, CLI, BASE)
    assert made.resource is not None and made.resource["userName"] == "after@x.example"


class _Caller:
    """Requests straight to the ASGI app, so that several start in one turn of its loop (one
    group commit)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.headers = [
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/scim+json"),
            (b"host", b"127.0.0.1"),
        ]

    async def __call__(self, method: str, path: str, data: Any = None) -> tuple[int, bytes]:
        raw = orjson.dumps(data) if data is not None else b""
        sent = False
        out: dict[str, Any] = {"status": 0, "body": b""}

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                out["status"] = message["status"]
            elif message["type"] == "http.response.body":
                out["body"] += message.get("body", b"")

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": self.headers,
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
        }
        await self.app(scope, receive, send)
        return out["status"], out["body"]


async def _serving(app: Any, scenario: Any) -> Any:
    to_app: asyncio.Queue[Any] = asyncio.Queue()
    from_app: asyncio.Queue[Any] = asyncio.Queue()
    await to_app.put({"type": "lifespan.startup"})
    life = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    running = asyncio.create_task(app(life, to_app.get, from_app.put))
    assert (await from_app.get())["type"] == "lifespan.startup.complete"
    try:
        return await scenario()
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        await from_app.get()
        await running


def test_a_full_disk_met_by_last_used_bookkeeping_fails_the_write_and_its_batch(
    tmp_path: Path,
) -> None:
    """From a review: a write's authentication records "last used" (its application's first
    request of the minute) inside the group commit. When that update filled the disk, SQLite
    rolled the whole batch back, the error was swallowed as bookkeeping, the write went on
    outside any transaction (its DELETE committed on its own, answered 503), and the batch's
    other DELETE was answered 204 though rolled back. Both are 503s now, and neither is done."""
    import shutil
    import sqlite3

    base = tmp_path / "base.db"
    e = create_engine(f"sqlite:///{base}")
    ensure_current(e)
    with e.begin() as conn:
        _, tok_a = apps.create_app(conn, "A", "bearer", ["API", "USER SYNC"], CLI)
        _, tok_b = apps.create_app(conn, "B", "bearer", ["API", "USER SYNC"], CLI)
        conn.exec_driver_sql("UPDATE applications SET last_used = '2026-01-01T00:00:00.000Z'")
        conn.exec_driver_sql("UPDATE applications SET last_used = NULL WHERE name = 'B'")
    with e.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    e.dispose()

    def shaped(length: int, path: Path) -> int:
        """The base with a filler application of a ``length`` name (it shapes the page that
        holds B's row); its page count."""
        shutil.copy(base, path)
        c = sqlite3.connect(path, isolation_level=None)
        c.execute(
            "INSERT INTO applications (client_id, name, grant_type, scopes, token_lifetime,"
            " enabled, created) VALUES ('filler', ?, 'bearer', '[]', 0, 0,"
            " '2026-01-01T00:00:00.000Z')",
            ("F" * length,),
        )
        c.execute("VACUUM")
        pages = int(c.execute("PRAGMA page_count").fetchone()[0])
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        c.close()
        return pages

    probe = tmp_path / "probe.db"
    fewest = shaped(1, probe)
    lo, hi = 1, 3900  # the longest filler that keeps the applications in one page: B's page full
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if shaped(mid, probe) == fewest else (lo, mid - 1)
    path = tmp_path / "x.db"
    pages = shaped(lo, path)
    engine = create_engine(f"sqlite:///{path}")
    app = create_app(Settings(access_log=False), engine)

    async def scenario() -> list[Any]:
        a, b = _Caller(app, tok_a), _Caller(app, tok_b)
        ids = []
        for i in range(2):
            status, body = await a("POST", "/scim/v2/Users", {"userName": f"u{i}@x"})
            assert status == 201, body
            ids.append(orjson.loads(body)["id"])
        driver = app.state.directory._thread_connection().connection.driver_connection
        now = driver.execute("PRAGMA page_count").fetchone()[0]
        driver.execute(f"PRAGMA max_page_count={now}")
        deleted = await asyncio.gather(
            a("DELETE", f"/scim/v2/Users/{ids[0]}"), b("DELETE", f"/scim/v2/Users/{ids[1]}")
        )
        driver.execute(f"PRAGMA max_page_count={now + 100_000}")
        found = [(await a("GET", f"/scim/v2/Users/{i}"))[0] for i in ids]
        return [[s for s, _ in deleted], found]

    try:
        deleted, found = asyncio.run(_serving(app, scenario))
    finally:
        engine.dispose()
    assert pages == fewest
    assert deleted == [503, 503], deleted
    assert found == [200, 200], found


def test_a_read_in_a_lost_batch_is_still_answered(tmp_path: Path) -> None:
    """From a review: a GET whose "last used" bookkeeping joined a group commit that a failed
    write (a full disk) had lost got that write's 503 ("the change was not saved")."""
    url = f"sqlite:///{tmp_path / 'g.db'}"
    e = create_engine(url)
    ensure_current(e)
    with e.begin() as conn:
        _, tok_a = apps.create_app(conn, "A", "bearer", ["API", "USER SYNC"], CLI)
        _, tok_b = apps.create_app(conn, "B", "bearer", ["API", "USER SYNC"], CLI)
    e.dispose()
    engine = create_engine(url)
    app = create_app(Settings(access_log=False), engine)

    async def scenario() -> tuple[int, int]:
        a, b = _Caller(app, tok_a), _Caller(app, tok_b)
        ids = []
        for i in range(1500):
            ids.append(
                orjson.loads((await a("POST", "/scim/v2/Users", {"userName": f"u{i}"}))[1])["id"]
            )
        gid = orjson.loads((await a("POST", "/scim/v2/Groups", {"displayName": "g"}))[1])["id"]
        driver = app.state.directory._thread_connection().connection.driver_connection
        now = driver.execute("PRAGMA page_count").fetchone()[0]
        driver.execute(f"PRAGMA max_page_count={now + 20}")
        patch = {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": i} for i in ids]}],
        }
        (patched, _), (read, _) = await asyncio.gather(
            a("PATCH", f"/scim/v2/Groups/{gid}", patch), b("GET", f"/scim/v2/Users/{ids[0]}")
        )
        return patched, read

    try:
        patched, read = asyncio.run(_serving(app, scenario))
    finally:
        engine.dispose()
    assert (patched, read) == (503, 200)


def test_a_batch_whose_transaction_is_gone_at_release_is_lost(directory: Directory) -> None:
    """From a review: a write whose statement error was handled after SQLite had rolled the
    whole transaction back (here, a ROLLBACK on the driver in its place) ended with RELEASE
    failing "no such savepoint"; the batch then committed nothing, and its earlier write was
    reported saved."""
    from scimd.store.directory import BatchLost

    tx = directory.begin_batch()
    directory.create("User", {"userName": "one@x.example"}, CLI, BASE)
    with pytest.raises(BatchLost), directory.write() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.execute("ROLLBACK")
    with pytest.raises(BatchLost):
        directory.end_batch(tx)
    assert _count(directory.engine, sa.select(sa.func.count()).select_from(users)) == 0
    directory.create("User", {"userName": "two@x.example"}, CLI, BASE)  # writes go on
    assert _count(directory.engine, sa.select(sa.func.count()).select_from(users)) == 1


def test_a_full_disk_at_commit_is_said_to_every_write_of_the_batch(directory: Directory) -> None:
    """Every write of a batch whose COMMIT met a full disk is told the disk is full (what an
    operator must fix), not "retry the request", which a client would do at once, in vain."""

    def full_at_commit(tx: sa.RootTransaction) -> None:
        tx.rollback()
        directory._local.batch = False
        full = sqlite3.OperationalError("database or disk is full")
        raise sa.exc.OperationalError("COMMIT", None, full)

    async def scenario() -> list[Any]:
        group = GroupCommit(directory)
        directory.end_batch = full_at_commit  # type: ignore[method-assign]

        def make(name: str) -> Any:
            return lambda: directory.create("User", {"userName": name}, CLI, BASE)

        return await asyncio.gather(
            *(group.run(make(f"f{i}@x.example")) for i in range(3)), return_exceptions=True
        )

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, ScimError) and o.status == 503 for o in outcomes), outcomes
    assert all("disk is full" in o.detail for o in outcomes), [o.detail for o in outcomes]


def test_a_failed_commit_leaves_the_write_lock_to_other_processes(
    directory: Directory, tmp_path: Path
) -> None:
    """SQLite keeps a transaction whose COMMIT failed open, its write lock with it: until the
    server's next write, a command or a second server on the file could not write at all."""
    _checked_at_commit(directory.engine)

    def orphan() -> None:
        with directory.write() as conn:
            conn.execute(sa.text("INSERT INTO child (pid) VALUES (42)"))  # no parent 42

    async def scenario() -> list[Any]:
        return await asyncio.gather(GroupCommit(directory).run(orphan), return_exceptions=True)

    (failed,) = asyncio.run(scenario())
    assert isinstance(failed, ScimError) and failed.status == 503, failed
    other = sqlite3.connect(tmp_path / "g.db", timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # "database is locked" while the lock was kept
        other.execute("ROLLBACK")
    finally:
        other.close()


def test_writes_queued_behind_a_lock_wait_that_gives_up_fail_with_it(
    directory: Directory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another process holds the write lock, the writes that queued behind the one
    waiting for it fail when it gives up: each waiting database_timeout again in turn made
    the last of n writes answer after n timeouts."""
    waits = []
    real = batching.until_unlocked

    async def counted(attempt: Any, timeout: float) -> Any:
        waits.append(timeout)
        return await real(attempt, timeout)

    monkeypatch.setattr(batching, "until_unlocked", counted)
    other = sqlite3.connect(tmp_path / "g.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's write lock
    try:

        async def scenario() -> list[Any]:
            group = GroupCommit(directory, timeout=0.2)

            def make(name: str) -> Any:
                return lambda: directory.create("User", {"userName": name}, CLI, BASE)

            return await asyncio.gather(
                *(group.run(make(f"q{i}@x.example")) for i in range(4)), return_exceptions=True
            )

        outcomes = asyncio.run(scenario())
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert all(isinstance(o, sa.exc.OperationalError) for o in outcomes), outcomes
    assert waits == [0.2]  # one wait for the four writes


def test_a_database_timeout_of_zero_waits_for_the_write_lock(
    directory: Directory, tmp_path: Path
) -> None:
    """database_timeout = 0 means wait forever (settings): a write behind another process's
    short write (a command, a backup) must wait for it, not fail at once."""
    other = sqlite3.connect(tmp_path / "g.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    real = directory.begin_batch
    refused = []

    def begin_batch(*, wait: bool = True) -> sa.RootTransaction:
        try:
            return real(wait=wait)
        except sa.exc.OperationalError:
            if not refused:
                other.execute("COMMIT")  # the other process's write ends meanwhile
            refused.append(True)
            raise

    directory.begin_batch = begin_batch  # type: ignore[method-assign]

    async def scenario() -> Any:
        group = GroupCommit(directory, timeout=0)
        return await group.run(
            lambda: directory.create("User", {"userName": "patient@x.example"}, CLI, BASE)
        )

    try:
        made = asyncio.run(scenario())
    finally:
        other.close()
    assert refused  # it did meet the lock
    assert made.resource["userName"] == "patient@x.example"


# -- the wait for SQLite's write lock (web.batching) -------------------------------------------


def _sqlite_failure(text: str) -> sa.exc.OperationalError:
    return sa.exc.OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError(text))


def test_a_write_lock_wait_gives_up_at_once_on_an_error_other_than_busy() -> None:
    """Only "database is locked" is waited out: a read-only or full disk met at BEGIN fails
    the write at once (a 503 now), not after trying again for ``database_timeout``."""
    calls: list[str] = []

    async def attempt() -> str:
        calls.append("try")
        if len(calls) == 1:
            raise _sqlite_failure("attempt to write a readonly database")
        return "begun"

    with pytest.raises(sa.exc.OperationalError, match="readonly"):
        asyncio.run(batching.until_unlocked(attempt, 30))
    assert calls == ["try"]


def test_a_write_lock_wait_tries_again_often_while_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    """While another process holds the lock, BEGIN is tried again after pauses that grow to
    50 ms at most: a write waits at most that long past the lock's release, never seconds."""
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(batching.asyncio, "sleep", pause)
    tries = iter(range(20))

    async def attempt() -> str:
        if next(tries) < 19:
            raise _sqlite_failure("database is locked")
        return "begun"

    assert asyncio.run(batching.until_unlocked(attempt, 30)) == "begun"
    assert len(pauses) == 19 and pauses[0] <= 0.001 and max(pauses) == 0.05
