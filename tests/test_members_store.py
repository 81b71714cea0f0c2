"""Group membership in the store: set semantics, errors, User.groups, deletes, the membership
table's migration (0003) and the background WAL checkpointer, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from scimd.scim.errors import InvalidValue
from scimd.store import audit, migrate
from scimd.store import engine as engine_mod
from scimd.store.checkpoint import Checkpointer
from scimd.store.directory import Directory
from scimd.store.engine import create_engine

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BASE = "http://scim.test/scim/v2"


def _user(d: Directory, name: str) -> str:
    w = d.create("User", {"schemas": [USER], "userName": name}, audit.CLI, BASE)
    assert w.resource is not None
    return str(w.resource["id"])


def _group(d: Directory, name: str) -> str:
    w = d.create("Group", {"schemas": [GROUP], "displayName": name}, audit.CLI, BASE)
    assert w.resource is not None
    return str(w.resource["id"])


def _patch(d: Directory, gid: str, *ops: dict[str, Any]) -> Any:
    return d.patch(
        "Group", gid, {"schemas": [PATCH], "Operations": list(ops)}, audit.CLI, BASE, None
    )


def _op(op: str, ids: list[str]) -> dict[str, Any]:
    return {"op": op, "path": "members", "value": [{"value": i} for i in ids]}


def _members(d: Directory, gid: str) -> dict[str, str]:
    res, _ = d.get("Group", gid, BASE)
    return {m["value"]: m["type"] for m in res.get("members", [])}


def _gate() -> Any:
    """An authorisation gate: what the SCIM API passes, which lets PostgreSQL write with one
    conditional statement (``store.conditional``)."""

    def gate(conn: sa.Connection, v: Any) -> audit.Actor:
        return audit.Actor("app", "client-1", "entra", "req-1")

    return gate


def _pk(d: Directory, gid: str) -> int:
    with d.engine.connect() as conn:
        return int(
            conn.execute(sa.text("SELECT pk FROM groups WHERE id = :id"), {"id": gid}).scalar_one()
        )


def _groups(d: Directory, uid: str) -> set[str]:
    res, _ = d.get("User", uid, BASE)
    return {g["value"] for g in res.get("groups", [])}


def test_add_and_remove_are_set_operations(directory: Directory) -> None:
    d = directory
    users = [_user(d, f"m{i}@x.test") for i in range(4)]
    gid, nested = _group(d, "Team"), _group(d, "Nested")

    _patch(d, gid, _op("Add", [users[0], users[1], nested]))
    assert _members(d, gid) == {users[0]: "User", users[1]: "User", nested: "Group"}

    # Adding members again (Entra re-sends adds), with duplicates in one list: a no-op.
    _patch(d, gid, _op("Add", [users[0], users[0], nested]))
    assert _members(d, gid) == {users[0]: "User", users[1]: "User", nested: "Group"}

    # Removing a non-member is a no-op; the listed member goes.
    _patch(d, gid, _op("Remove", [users[2], users[0]]))
    assert _members(d, gid) == {users[1]: "User", nested: "Group"}

    # Several operations in one PATCH apply in order.
    _patch(d, gid, _op("Add", [users[2], users[3]]), _op("Remove", [users[3], nested]))
    assert _members(d, gid) == {users[1]: "User", users[2]: "User"}


def test_unknown_member_is_400_and_writes_nothing(directory: Directory) -> None:
    d = directory
    u = _user(d, "known@x.test")
    gid = _group(d, "Strict")
    _patch(d, gid, _op("Add", [u]))
    _, version = d.get("Group", gid, BASE)

    other = _user(d, "other@x.test")
    with pytest.raises(InvalidValue, match="unknown id") as err:
        _patch(d, gid, _op("Add", [other, "no-such-id"]))
    assert err.value.status == 400
    assert "no-such-id" in str(err.value)
    assert _members(d, gid) == {u: "User"}
    assert d.get("Group", gid, BASE)[1] == version


def test_user_groups_and_user_delete(directory: Directory) -> None:
    d = directory
    a, b = _user(d, "a@x.test"), _user(d, "b@x.test")
    g1, g2 = _group(d, "G1"), _group(d, "G2")
    _patch(d, g1, _op("Add", [a, b]))
    _patch(d, g2, _op("Add", [a]))
    assert _groups(d, a) == {g1, g2}
    assert _groups(d, b) == {g1}

    _patch(d, g2, _op("Remove", [a]))
    assert _groups(d, a) == {g1}

    d.delete("User", a, audit.CLI, None)
    assert _members(d, g1) == {b: "User"}
    assert _groups(d, b) == {g1}

    # Deleting a group drops its own membership rows and its place in other groups.
    _patch(d, g2, _op("Add", [g1]))
    d.delete("Group", g1, audit.CLI, None)
    assert _groups(d, b) == set()
    assert _members(d, g2) == {}


def _meta(d: Directory, gid: str) -> tuple[str, str]:
    res, _ = d.get("Group", gid, BASE)
    return res["meta"]["version"], res["meta"]["lastModified"]


@pytest.mark.parametrize("how", ["transaction", "conditional"])
def test_deleting_a_member_gives_its_groups_a_new_version(directory: Directory, how: str) -> None:
    """The groups a deleted user or group leaves changed: an ETag taken before must not match
    (it did, and If-None-Match answered 304 with the member still listed)."""
    d = directory
    actor: Any = audit.CLI if how == "transaction" else _gate()
    u, other = _user(d, "gone@x.test"), _user(d, "stays@x.test")
    g1, g2, g3, inner = _group(d, "G1"), _group(d, "G2"), _group(d, "G3"), _group(d, "Inner")
    _patch(d, g1, _op("Add", [u, other]))
    _patch(d, g2, _op("Add", [u, inner]))
    _patch(d, g3, _op("Add", [other]))
    before = {g: _meta(d, g) for g in (g1, g2, g3)}
    d.delete("User", u, actor, None)
    for g in (g1, g2):
        version, modified = _meta(d, g)
        assert version != before[g][0] and modified >= before[g][1]
    assert _meta(d, g3) == before[g3]
    assert _members(d, g1) == {other: "User"}
    # The delete's audit record names the groups it changed, as a member PATCH would.
    assert _delete_detail(d, u) == {"userName": "gone@x.test", "groups": sorted([g1, g2])}
    v2 = _meta(d, g2)[0]
    d.delete("Group", inner, actor, None)
    assert _meta(d, g2)[0] != v2 and _members(d, g2) == {}
    assert _delete_detail(d, inner) == {"displayName": "Inner", "groups": [g2]}
    d.delete("User", other, actor, None)  # g1 and g3 lose it; g3 was untouched till now
    assert _delete_detail(d, other) == {"userName": "stays@x.test", "groups": sorted([g1, g3])}
    lonely = _user(d, "lonely@x.test")
    d.delete("User", lonely, actor, None)
    assert _delete_detail(d, lonely) == {"userName": "lonely@x.test"}


def _delete_detail(d: Directory, rid: str) -> Any:
    with d.engine.connect() as conn:
        rows = [r for r in audit.history(conn, resource_id=rid) if r["operation"] == "delete"]
    assert len(rows) == 1
    return rows[0]["detail"]


@pytest.mark.parametrize("how", ["transaction", "conditional"])
def test_member_changes_that_change_nothing_keep_the_version(
    directory: Directory, how: str
) -> None:
    """Entra re-sends adds of members a group has, and removes of members it lost: no new
    version (an ETag taken before still matches) and no audit record (RFC 7644 §3.14)."""
    d = directory
    actor: Any = audit.CLI if how == "transaction" else _gate()
    a, b, c = _user(d, "nc-a@x.test"), _user(d, "nc-b@x.test"), _user(d, "nc-c@x.test")
    g = _group(d, "NoChange")

    def patch(*ops: dict[str, Any]) -> str:
        body = {"schemas": [PATCH], "Operations": list(ops)}
        return str(d.patch("Group", g, body, actor, BASE, None).etag)

    def audited() -> int:
        with d.engine.connect() as conn:
            return len(audit.history(conn, resource_id=g))

    first = patch(_op("Add", [a, b]))
    assert _meta(d, g)[0] == first
    records = audited()
    for ops in (
        [_op("Add", [a])],
        [_op("Add", [a, b])],
        [_op("Remove", [c])],
        [_op("Add", [b]), _op("Remove", [c])],
        [{"op": "replace", "path": "members", "value": [{"value": b}, {"value": a}]}],
        [{"op": "replace", "path": "displayName", "value": "NoChange"}, _op("Add", [a])],
    ):
        assert patch(*ops) == first, ops
    assert _meta(d, g)[0] == first and audited() == records
    assert _members(d, g) == {a: "User", b: "User"}

    # Real changes still move it, and a replace keeps the members it names.
    second = patch(_op("Add", [b, c]))
    assert second != first and _members(d, g) == {a: "User", b: "User", c: "User"}
    third = patch({"op": "replace", "path": "members", "value": [{"value": c}, {"value": b}]})
    assert third != second and _members(d, g) == {b: "User", c: "User"}
    fourth = patch(_op("Remove", [a, b]))
    assert fourth != third and _members(d, g) == {c: "User"}
    assert audited() == records + 3


def test_a_page_of_users_shows_each_users_groups(directory: Directory) -> None:
    """A list page reads the groups of all its users with one statement: each user gets
    exactly its own, ordered by displayName regardless of case."""
    d = directory
    a, b, c = _user(d, "pa@x.test"), _user(d, "pb@x.test"), _user(d, "pc@x.test")
    beta, alpha, gamma = _group(d, "beta"), _group(d, "Alpha"), _group(d, "GAMMA")
    _patch(d, beta, _op("Add", [a, b]))
    _patch(d, alpha, _op("Add", [a]))
    _patch(d, gamma, _op("Add", [a, c]))
    page = d.search("User", None, BASE, start=1, count=10)
    by_user = {r["id"]: [g["display"] for g in r.get("groups", [])] for r in page.resources}
    assert by_user == {a: ["Alpha", "beta", "GAMMA"], b: ["beta"], c: ["GAMMA"]}
    # A request's page (authorised by its gate) is one statement with the counters and the
    # total: the same users, groups and totals, the gate run once per page.
    gated: list[Any] = []

    def gate(conn: sa.Connection, v: Any) -> Any:
        gated.append(v)
        return audit.CLI

    page = d.search("User", None, BASE, start=1, count=10, gate=gate)
    assert page.total == 3 and len(gated) == 1
    by_user = {r["id"]: [g["display"] for g in r.get("groups", [])] for r in page.resources}
    assert by_user == {a: ["Alpha", "beta", "GAMMA"], b: ["beta"], c: ["GAMMA"]}
    assert [r["id"] for r in page.resources] == [a, b, c]
    for start, count, ids in [(2, 1, [b]), (3, 5, [c]), (4, 5, []), (1, 0, []), (9, 0, [])]:
        page = d.search("User", None, BASE, start=start, count=count, gate=gate)
        assert (page.total, [r["id"] for r in page.resources]) == (3, ids), (start, count)
    page = d.search("User", None, BASE, start=2, count=5, attributes=["userName"], gate=gate)
    assert page.resources == [
        {"schemas": [USER], "id": b, "userName": "pb@x.test"},
        {"schemas": [USER], "id": c, "userName": "pc@x.test"},
    ]
    assert len(gated) == 7


def test_large_batches_and_replace(directory: Directory) -> None:
    d = directory
    users = [_user(d, f"bulk{i}@x.test") for i in range(1100)]
    gid = _group(d, "Bulk")
    _patch(d, gid, _op("Add", users))
    assert set(_members(d, gid)) == set(users)

    _patch(d, gid, _op("Remove", users[:1050]))
    assert set(_members(d, gid)) == set(users[1050:])

    # PUT replaces the whole member set.
    body = {"schemas": [GROUP], "displayName": "Bulk", "members": [{"value": users[0]}]}
    d.replace("Group", gid, body, audit.CLI, BASE, None)
    assert _members(d, gid) == {users[0]: "User"}

    # A remove of every member (no value) empties the group.
    _patch(d, gid, {"op": "Remove", "path": "members"})
    assert _members(d, gid) == {}


def _member_rows(engine: sa.Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        q = "SELECT group_pk, member_id, member_type FROM members ORDER BY member_id"
        return [tuple(r) for r in conn.execute(sa.text(q))]


def _sqlite_ddl(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        q = "SELECT sql FROM sqlite_master WHERE name = 'members'"
        return str(conn.execute(sa.text(q)).scalar_one())


def test_migration_0003_keeps_memberships(any_database_url: str) -> None:
    engine = create_engine(any_database_url)
    try:
        migrate.upgrade(engine, "0002")
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO groups (id, display_name, display_name_lower, created,"
                    " last_modified, version, doc)"
                    " VALUES ('g1', 'G', 'g', 'x', 'x', 1, CAST('{}' AS JSON))"
                    if engine.dialect.name == "postgresql"
                    else "INSERT INTO groups (id, display_name, display_name_lower, created,"
                    " last_modified, version, doc) VALUES ('g1', 'G', 'g', 'x', 'x', 1, '{}')"
                )
            )
            pk = conn.execute(sa.text("SELECT pk FROM groups WHERE id = 'g1'")).scalar_one()
            conn.execute(
                sa.text("INSERT INTO members VALUES (:g, 'u2', 'User'), (:g, 'u1', 'Group')"),
                {"g": pk},
            )
        migrate.upgrade(engine, "0003")

        assert _member_rows(engine) == [(pk, "u1", "Group"), (pk, "u2", "User")]
        if engine.dialect.name == "sqlite":
            assert "WITHOUT ROWID" in _sqlite_ddl(engine)
            with engine.connect() as conn:
                assert conn.execute(sa.text("PRAGMA foreign_key_check")).fetchall() == []
            # The group's rows still go with it (ON DELETE CASCADE survived the copy).
            with engine.begin() as conn:
                conn.execute(sa.text("DELETE FROM groups WHERE id = 'g1'"))
            assert _member_rows(engine) == []

        with engine.begin() as conn:
            command.downgrade(migrate._config(conn), "0002")
        migrate.ensure_current(engine)
        assert migrate.current(engine) == migrate.head()
    finally:
        engine.dispose()


def _foreign_keys(engine: sa.Engine) -> list[Any]:
    return sa.inspect(engine).get_foreign_keys("members")


def test_migration_0004_drops_the_group_key_and_its_downgrade_restores_it(
    any_database_url: str,
) -> None:
    """0004 keeps every membership and drops the key to ``groups``; its downgrade removes
    memberships of groups that no longer exist, then restores the key with its cascade."""
    engine = create_engine(any_database_url)
    json_doc = "CAST('{}' AS JSON)" if engine.dialect.name == "postgresql" else "'{}'"
    try:
        migrate.upgrade(engine, "0003")
        assert [fk["referred_table"] for fk in _foreign_keys(engine)] == ["groups"]
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO groups (id, display_name, display_name_lower, created,"
                    " last_modified, version, doc)"
                    f" VALUES ('g1', 'G', 'g', 'x', 'x', 1, {json_doc})"
                )
            )
            pk = conn.execute(sa.text("SELECT pk FROM groups WHERE id = 'g1'")).scalar_one()
            conn.execute(
                sa.text("INSERT INTO members VALUES (:g, 'u2', 'User'), (:g, 'u1', 'Group')"),
                {"g": pk},
            )
        migrate.upgrade(engine, "0004")
        assert _foreign_keys(engine) == []

        assert _member_rows(engine) == [(pk, "u1", "Group"), (pk, "u2", "User")]
        # Without the key, a membership of a missing group can exist; the downgrade drops it.
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO members VALUES (:g, 'u3', 'User')"), {"g": pk + 99})
        with engine.begin() as conn:
            command.downgrade(migrate._config(conn), "0003")
        assert [fk["referred_table"] for fk in _foreign_keys(engine)] == ["groups"]
        assert _member_rows(engine) == [(pk, "u1", "Group"), (pk, "u2", "User")]
        if engine.dialect.name == "sqlite":
            assert "WITHOUT ROWID" in _sqlite_ddl(engine)
        migrate.ensure_current(engine)
        assert migrate.current(engine) == migrate.head()
    finally:
        engine.dispose()


def test_deleting_a_group_removes_its_memberships(any_database_url: str) -> None:
    """No key cascades any more: the directory removes a deleted group's memberships itself,
    on the conditional path (PostgreSQL, from the SCIM API) and in a transaction (SQLite, the
    command line), and the group's membership of other groups too."""
    engine = create_engine(any_database_url)
    migrate.ensure_current(engine)
    d = Directory(engine)
    try:
        users = [_user(d, f"gone{i}@x.com") for i in range(3)]
        for actor in (audit.CLI, _gate()):
            inner = d.create(
                "Group",
                {
                    "schemas": [GROUP],
                    "displayName": f"inner-{id(actor)}",
                    "members": [{"value": u} for u in users],
                },
                audit.CLI,
                BASE,
            ).resource["id"]
            outer = d.create(
                "Group",
                {
                    "schemas": [GROUP],
                    "displayName": f"outer-{id(actor)}",
                    "members": [{"value": inner}, {"value": users[0]}],
                },
                audit.CLI,
                BASE,
            ).resource["id"]
            inner_pk = _pk(d, inner)
            d.delete("Group", inner, actor, None)
            with engine.connect() as conn:
                left = conn.execute(
                    sa.text("SELECT count(*) FROM members WHERE group_pk = :pk OR member_id = :id"),
                    {"pk": inner_pk, "id": inner},
                ).scalar_one()
            assert left == 0
            assert _members(d, outer) == {users[0]: "User"}
    finally:
        d.close()
        engine.dispose()


# ---------------------------------------------------------------------------------------------
# WAL checkpoints (SQLite)


class _Recording(Checkpointer):
    """A checkpointer that remembers what each of its checkpoints reported."""

    def __init__(self, engine: sa.Engine, interval: float) -> None:
        super().__init__(engine, interval)
        self.results: list[tuple[str, tuple[int, int, int]]] = []
        self.progress = threading.Condition()

    def _checkpoint(self, mode: str) -> tuple[int, int, int]:
        result = super()._checkpoint(mode)
        with self.progress:
            self.results.append((mode, result))
            self.progress.notify_all()
        return result


def _write(engine: sa.Engine, n: int) -> None:
    with engine.begin() as conn:
        for i in range(n):
            conn.execute(
                sa.text("INSERT INTO settings (key, value) VALUES (:k, :v)"),
                {"k": f"k{os.urandom(8).hex()}", "v": "x" * 3000 + str(i)},
            )


def _wal_size(db: Path) -> int:
    wal = Path(f"{db}-wal")
    return wal.stat().st_size if wal.exists() else 0


@contextmanager
def _checkpointing(db: Path, kind: type[_Recording]) -> Iterator[tuple[sa.Engine, _Recording]]:
    """A database at ``db`` with a running checkpointer of ``kind``, stopped on leaving (so
    its final checkpoint is made there) and the engine disposed."""
    engine = create_engine(f"sqlite:///{db}")
    migrate.ensure_current(engine)
    ck = kind(engine, interval=0.001)
    ck.start()
    try:
        yield engine, ck
    finally:
        ck.stop()
        engine.dispose()


def test_checkpointer_copies_in_background_and_truncates_on_stop(tmp_path: Path) -> None:
    db = tmp_path / "ck.db"
    with _checkpointing(db, _Recording) as (engine, ck):
        _write(engine, 50)
        # The thread checkpoints what the writes left in the log, without the writer's help.
        with ck.progress:
            done = ck.progress.wait_for(
                lambda: any(m == "PASSIVE" and r[1] > 0 and r[2] == r[1] for m, r in ck.results),
                timeout=60,
            )
        assert done, ck.results[-5:]
        with engine.connect() as conn:
            q = "SELECT count(*) FROM settings WHERE key LIKE 'k%'"
            assert conn.execute(sa.text(q)).scalar() == 50
    assert ck.results[-1][0] == "TRUNCATE"
    assert _wal_size(db) == 0


class _FailingOnce(_Recording):
    """A checkpointer whose first checkpoint meets a disk error."""

    def __init__(self, engine: sa.Engine, interval: float) -> None:
        super().__init__(engine, interval)
        self.failed = False

    def _checkpoint(self, mode: str) -> tuple[int, int, int]:
        if not self.failed:
            self.failed = True
            raise sqlite3.OperationalError("disk I/O error")
        return super()._checkpoint(mode)


def test_checkpointer_goes_on_after_a_failed_checkpoint(tmp_path: Path) -> None:
    """A checkpoint that fails once (a passing disk error) is retried: had the thread ended,
    nothing but the writer's safety net would copy the log back for the rest of the run."""
    with _checkpointing(tmp_path / "again.db", _FailingOnce) as (engine, ck):
        _write(engine, 5)
        with ck.progress:
            done = ck.progress.wait_for(
                lambda: sum(m == "PASSIVE" for m, _ in ck.results) >= 2, timeout=10
            )
        assert isinstance(ck, _FailingOnce) and ck.failed and done, ck.results


def test_wal_stays_bounded_under_continuous_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Passive checkpoints never catch up with a busy writer; the writer's own automatic
    checkpoint (the safety net) still starts the log over, so it does not grow without bound."""
    pages = 40
    monkeypatch.setattr(engine_mod, "WAL_AUTOCHECKPOINT_PAGES", pages)
    db = tmp_path / "bound.db"
    engine = create_engine(f"sqlite:///{db}")
    migrate.ensure_current(engine)
    with engine.connect() as conn:
        page_size = int(conn.execute(sa.text("PRAGMA page_size")).scalar_one())
        assert conn.execute(sa.text("PRAGMA wal_autocheckpoint")).scalar_one() == pages
    ck = Checkpointer(engine)
    ck.start()
    try:
        largest = 0
        for _ in range(1000):
            _write(engine, 2)  # a few pages per transaction
            largest = max(largest, _wal_size(db))
        # Unbounded, the log would hold every frame written (about 4,700 pages). The bound is
        # the safety net's size plus what is written while one background checkpoint holds the
        # checkpoint lock (the writer's attempts in that time find it busy).
        assert largest <= 15 * pages * (page_size + 24) + 32
    finally:
        ck.stop()
        engine.dispose()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "postgresql"])
def test_checkpointer_ignores_other_databases(url: str, request: pytest.FixtureRequest) -> None:
    if url == "postgresql":
        url = str(request.getfixturevalue("postgres_url"))
    engine = create_engine(url)
    ck = Checkpointer(engine)
    ck.start()  # nothing to do: no thread, no connection
    assert ck._thread is None and ck._conn is None
    ck.stop()
    engine.dispose()


def test_server_shutdown_leaves_no_log(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from scimd.auth import apps
    from scimd.settings import Settings
    from scimd.web.app import create_app

    db = tmp_path / "app.db"
    engine = create_engine(f"sqlite:///{db}")
    app = create_app(Settings(), engine)
    with engine.begin() as conn:
        _, token = apps.create_app(conn, "t", "bearer", ["API", "USER SYNC"], audit.CLI)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    with TestClient(app) as client:
        r = client.post("/scim/v2/Users", headers=headers, content=b'{"userName": "wal@x.test"}')
        assert r.status_code == 201, r.text
    assert _wal_size(db) == 0
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)
    finally:
        conn.close()


def test_write_connections_keep_statement_journals_in_memory(tmp_path: Path) -> None:
    """A write inside a savepoint (a group commit) keeps its page copies in memory, not in a
    temporary file; read connections, whose sorts can be as large as a table, do not."""
    engine = create_engine(f"sqlite:///{tmp_path / 'tmp.db'}")
    try:
        with engine.connect() as reader, reader.begin():
            assert reader.execute(sa.text("PRAGMA temp_store")).scalar_one() == 0
        with engine.connect() as writer:
            writer = writer.execution_options(sqlite_begin="IMMEDIATE")
            with writer.begin():
                assert writer.execute(sa.text("PRAGMA temp_store")).scalar_one() == 2  # MEMORY
    finally:
        engine.dispose()


def test_connections_read_through_a_memory_map(tmp_path: Path) -> None:
    """Every SQLite connection maps the database file (capped by SQLite at its maximum), and a
    second connection reads through its map what the first committed."""
    engine = create_engine(f"sqlite:///{tmp_path / 'mmap.db'}")
    try:
        migrate.ensure_current(engine)
        d = Directory(engine)
        uid = _user(d, "mapped@x.test")
        with engine.connect() as conn:
            assert conn.execute(sa.text("PRAGMA mmap_size")).scalar_one() >= 256 * 1024**2
        fresh = create_engine(f"sqlite:///{tmp_path / 'mmap.db'}")
        other = Directory(fresh)
        try:
            user, _ = other.get("User", uid, BASE)
            assert user["userName"] == "mapped@x.test"
        finally:
            other.close()
            fresh.dispose()
        d.close()
    finally:
        engine.dispose()


@pytest.mark.parametrize("path", ["transaction", "conditional"])
def test_member_added_while_its_user_is_deleted_leaves_no_membership(
    postgres_url: str, path: str
) -> None:
    """PostgreSQL runs the two at once: the add waits for the delete and then refuses the id,
    instead of writing a membership row for a user that no longer exists. Both ways a group
    PATCH is written: in a transaction (the command line's) and as one conditional statement
    (the SCIM API's, authorised by a gate)."""
    engine = create_engine(postgres_url)
    migrate.ensure_current(engine)
    d = Directory(engine)
    try:
        uid, gid = _user(d, "doomed@x.com"), _group(d, "Survivors")
        outcome: list[Any] = []
        with engine.connect() as deleter:
            tx = deleter.begin()
            deleter.execute(sa.text("DELETE FROM users WHERE id = :id"), {"id": uid})
            deleter.execute(sa.text("DELETE FROM members WHERE member_id = :id"), {"id": uid})

            def add() -> None:
                body = {"schemas": [PATCH], "Operations": [_op("add", [uid])]}
                actor: Any = audit.CLI
                if path == "conditional":
                    actor = lambda conn, v: audit.CLI  # noqa: E731 - a gate that admits
                try:
                    outcome.append(d.patch("Group", gid, body, actor, BASE, None))
                except InvalidValue as e:
                    outcome.append(e)
                finally:
                    d.close()

            adder = threading.Thread(target=add)
            adder.start()
            adder.join(timeout=1.0)
            assert adder.is_alive(), "the add must wait for the delete to end"
            tx.commit()
            adder.join(timeout=30)
        assert len(outcome) == 1 and isinstance(outcome[0], InvalidValue), outcome
        assert uid in str(outcome[0])  # named as an unknown member
        with engine.connect() as conn:
            left = conn.execute(
                sa.text("SELECT count(*) FROM members WHERE member_id = :id"), {"id": uid}
            ).scalar_one()
        assert left == 0
    finally:
        d.close()
        engine.dispose()


def _insert_groups(conn: sa.Connection, n: int) -> None:
    """PostgreSQL: groups g1..gn (displayName Gi), straight into the table."""
    conn.execute(
        sa.text(
            "INSERT INTO groups (id, display_name, display_name_lower, created, last_modified,"
            " version, doc) SELECT 'g' || i, 'G' || i, 'g' || i, 'x', 'x', 1, '{}'"
            " FROM generate_series(1, :n) i"
        ),
        {"n": n},
    )


def test_removing_members_of_a_large_group_reads_only_those_members(postgres_url: str) -> None:
    """PostgreSQL: removing 20 members of a 3,000-member group probes 20 rows, also under
    the generic plan a prepared statement gets after five runs (which plans for the average
    group, and used to read every member of the large one)."""
    from scimd.store.resources import MEMBER_PROBE

    engine = create_engine(postgres_url)
    migrate.ensure_current(engine)
    try:
        with engine.begin() as conn:
            _insert_groups(conn, 300)
            big = conn.execute(sa.text("SELECT pk FROM groups WHERE id = 'g1'")).scalar_one()
            # 300 groups of 10 members and one of 3,000: the average group is small.
            conn.execute(
                sa.text(
                    "INSERT INTO members (group_pk, member_id, member_type)"
                    " SELECT g.pk, 'm' || i, 'User' FROM groups g, generate_series(1, 10) i"
                    " WHERE g.pk <> :big UNION ALL"
                    " SELECT :big, 'm' || i, 'User' FROM generate_series(1, 3000) i"
                ),
                {"big": big},
            )
            conn.execute(sa.text("ANALYZE members"))
        ids = [f"m{i}" for i in range(100, 120)]
        sql = "EXPLAIN (ANALYZE, FORMAT JSON) DELETE FROM members WHERE ctid = ANY(ARRAY({}))"
        sql = sql.format(MEMBER_PROBE)
        with engine.connect() as conn:
            conn.execute(sa.text("SET plan_cache_mode = force_generic_plan"))
            driver: Any = conn.connection.driver_connection
            cur = driver.cursor()
            cur.execute(
                sql.replace(":ids", "%(ids)s").replace(":group_pk", "%(group_pk)s"),
                {"ids": json.dumps(ids), "group_pk": big},
                prepare=True,
            )
            plan = cur.fetchone()[0][0]["Plan"]
            conn.rollback()

        def rows_read(node: dict[str, Any]) -> int:
            own = node.get("Actual Rows", 0) * node.get("Actual Loops", 1)
            read = (
                own if node.get("Relation Name") == "members" and "Scan" in node["Node Type"] else 0
            )
            return read + sum(rows_read(child) for child in node.get("Plans", []))

        assert rows_read(plan) <= 2 * len(ids), plan
    finally:
        engine.dispose()


def _rows_read(node: dict[str, Any], table: str) -> int:
    """Rows a plan's scans of ``table`` produced, over all their loops (EXPLAIN ANALYZE)."""
    own = node.get("Actual Rows", 0) * node.get("Actual Loops", 1)
    read = own if node.get("Relation Name") == table and "Scan" in node["Node Type"] else 0
    return read + sum(_rows_read(child, table) for child in node.get("Plans", []))


def test_user_groups_read_only_the_users_memberships(postgres_url: str) -> None:
    """PostgreSQL: User.groups (GET of a user, a page of users) reads the user's memberships
    and their groups, also when the statistics put many memberships on every member. With
    such statistics PostgreSQL planned the join from the other side: every group, then a
    probe for the user's membership in each, so a GET cost grew with the number of groups."""
    from scimd.store import resources

    engine = create_engine(postgres_url)
    migrate.ensure_current(engine)
    d = Directory(engine)
    try:
        with engine.begin() as conn:
            _insert_groups(conn, 300)
            conn.execute(
                sa.text(
                    "INSERT INTO users (id, user_name, user_name_lower, created,"
                    " last_modified, version, doc) SELECT 'u' || i, 'U' || i, 'u' || i,"
                    " 'x', 'x', 1, '{}' FROM generate_series(1, 40) i"
                )
            )
            # u1 and u2 are in 5 groups each; the others in every group.
            conn.execute(
                sa.text(
                    "INSERT INTO members (group_pk, member_id, member_type)"
                    " SELECT g.pk, u.id, 'User' FROM groups g, users u WHERE u.id NOT IN"
                    " ('u1', 'u2') OR g.id IN ('g7', 'g8', 'g9', 'g10', 'g11')"
                )
            )
            conn.execute(sa.text("ALTER TABLE members ALTER COLUMN member_id SET (n_distinct = 2)"))
            conn.execute(sa.text("ANALYZE members"))
            conn.execute(sa.text("ANALYZE groups"))
        user, _ = d.get("User", "u1", BASE)
        assert sorted(g["value"] for g in user["groups"]) == ["g10", "g11", "g7", "g8", "g9"]
        with d.read() as conn:
            pages = resources.groups_of(conn, ["u1", "u2"])
            one = resources.groups_of(conn, ["u2"])
        assert [name for _, name in pages["u2"]] == ["G10", "G11", "G7", "G8", "G9"]
        assert one == {"u2": pages["u2"]}
        prepared = resources.STATEMENTS._by_dialect["postgresql"]
        cases = [
            ("User.get+groups", {"id": "u1"}, 5),
            ("groups_of.one", {"id": "u1"}, 5),
            ("groups_of.many", {"ids": json.dumps(["u1", "u2"])}, 10),
        ]
        with engine.connect() as conn:
            cur: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            for name, params, found in cases:
                cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + prepared[name].sql, params)
                plan = cur.fetchone()[0][0]["Plan"]
                assert _rows_read(plan, "members") <= 2 * found, (name, plan)
                assert _rows_read(plan, "groups") <= 2 * found, (name, plan)
            conn.rollback()
    finally:
        d.close()
        engine.dispose()


def _deleting(d: Directory, uid: str, actor: Any) -> tuple[threading.Thread, list[Any]]:
    """Delete ``uid`` in a thread; the outcome ("deleted" or the error) lands in the list."""
    outcome: list[Any] = []

    def delete() -> None:
        try:
            d.delete("User", uid, actor, None)
            outcome.append("deleted")
        except Exception as e:
            outcome.append(e)
        finally:
            d.close()

    thread = threading.Thread(target=delete)
    thread.start()
    return thread, outcome


def _until_it_waits(conn: sa.Connection, thread: threading.Thread) -> None:
    """Until ``thread`` waits for a lock (pg_locks: pg_stat_activity is a snapshot per
    transaction)."""
    for _ in range(100):
        if conn.execute(sa.text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar_one():
            return
        thread.join(timeout=0.05)
    raise AssertionError("the DELETE should wait for a lock")


def test_a_write_that_postgresql_ends_as_a_deadlock_victim_runs_again(postgres_url: str) -> None:
    """A DELETE in a transaction (the command line's, the portal's) locks the user, then the
    groups it leaves; another transaction holding such a group and then asking for the user
    deadlocks with it. PostgreSQL rolls the DELETE back (its deadlock check runs first here),
    and the DELETE runs again once the other ends."""
    engine = create_engine(postgres_url)
    migrate.ensure_current(engine)
    d = Directory(engine)
    try:
        uid, gid = _user(d, "locked@x.test"), _group(d, "Held")
        _patch(d, gid, _op("Add", [uid]))
        version = _meta(d, gid)[0]
        with engine.connect() as other:
            other.execute(sa.text("SET deadlock_timeout = '10s'"))  # the DELETE is the victim
            other.execute(sa.text("SELECT 1 FROM groups WHERE id = :id FOR UPDATE"), {"id": gid})
            deleter, outcome = _deleting(d, uid, audit.CLI)
            _until_it_waits(other, deleter)  # for the group's row
            other.execute(sa.text("SELECT 1 FROM users WHERE id = :id FOR SHARE"), {"id": uid})
            other.commit()
            deleter.join(timeout=30)
        assert outcome == ["deleted"], outcome
        assert _meta(d, gid)[0] != version and _members(d, gid) == {}
    finally:
        d.close()
        engine.dispose()


def test_the_scim_delete_locks_groups_before_their_member(postgres_url: str) -> None:
    """The SCIM API's DELETE locks the groups a member leaves before the member, as group
    writers do (a PUT locks its group, then its members): a writer holding a group can still
    take its member, so the two queue instead of deadlocking. (Member first, four clients
    PUTting member lists made 9 of 60 racing deletes a 503.)"""
    engine = create_engine(postgres_url)
    migrate.ensure_current(engine)
    d = Directory(engine)
    try:
        uid, gid = _user(d, "ordered@x.test"), _group(d, "Writer's")
        _patch(d, gid, _op("Add", [uid]))
        version = _meta(d, gid)[0]
        with engine.connect() as writer:
            writer.execute(sa.text("SET lock_timeout = '5s'"))
            writer.execute(sa.text("SELECT 1 FROM groups WHERE id = :id FOR UPDATE"), {"id": gid})
            deleter, outcome = _deleting(d, uid, _gate())  # a gate: the SCIM API's path
            _until_it_waits(writer, deleter)  # for the group's row
            # The member is not locked yet: the writer takes it at once, as a PUT would.
            writer.execute(sa.text("SELECT 1 FROM users WHERE id = :id FOR SHARE"), {"id": uid})
            writer.commit()
            deleter.join(timeout=30)
        assert outcome == ["deleted"], outcome
        assert _meta(d, gid)[0] != version and _members(d, gid) == {}
        with engine.connect() as conn:
            deadlocks = conn.execute(
                sa.text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            ).scalar_one()
        assert deadlocks == 0
    finally:
        d.close()
        engine.dispose()


def test_a_membership_removed_while_the_delete_waited_is_not_in_its_records(
    postgres_url: str,
) -> None:
    """A group PATCH removing the member commits while the DELETE waits for the group's
    lock: the DELETE's records name only the groups it really removed the member from (both
    the PATCH and the DELETE recorded the removal, under two applications)."""
    engine = create_engine(postgres_url)
    migrate.ensure_current(engine)
    d = Directory(engine)
    try:
        uid, gone, kept = _user(d, "raced@x.test"), _group(d, "Raced"), _group(d, "Kept")
        _patch(d, gone, _op("Add", [uid]))
        _patch(d, kept, _op("Add", [uid]))
        with engine.connect() as patch:  # the PATCH's statement, not committed yet
            patch.execute(sa.text("SELECT 1 FROM groups WHERE id = :id FOR UPDATE"), {"id": gone})
            patch.execute(
                sa.text("DELETE FROM members WHERE group_pk = :g AND member_id = :u"),
                {"g": _pk(d, gone), "u": uid},
            )
            deleter, outcome = _deleting(d, uid, _gate())
            _until_it_waits(patch, deleter)  # for the group's row
            patch.commit()
            deleter.join(timeout=30)
        assert outcome == ["deleted"], outcome
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT operation, resource_id, detail FROM audit"
                    " WHERE operation IN ('delete', 'member.delete') ORDER BY pk"
                )
            ).all()
        assert [(op, rid) for op, rid, _ in rows] == [("delete", uid), ("member.delete", kept)]
        assert rows[0][2] == {"userName": "raced@x.test", "groups": [kept]}
    finally:
        d.close()
        engine.dispose()


def test_a_membership_committed_while_the_delete_waited_still_bumps_its_group(
    postgres_url: str,
) -> None:
    """The DELETE gives versions to the groups it saw first; a PATCH that added the member to
    another group while the DELETE waited for the member's row is found when the memberships
    are removed, and that group gets a new version too."""
    engine = create_engine(postgres_url)
    migrate.ensure_current(engine)
    d = Directory(engine)
    try:
        uid, gid = _user(d, "late@x.test"), _group(d, "Late")
        version, pk = _meta(d, gid)[0], _pk(d, gid)
        with engine.connect() as patch:  # a group PATCH adding the user, not committed yet
            patch.execute(sa.text("SELECT 1 FROM users WHERE id = :id FOR SHARE"), {"id": uid})
            patch.execute(
                sa.text(
                    "INSERT INTO members (group_pk, member_id, member_type) VALUES (:g, :u, 'User')"
                ),
                {"g": pk, "u": uid},
            )
            deleter, outcome = _deleting(d, uid, _gate())
            _until_it_waits(patch, deleter)  # for the user's row
            patch.commit()
            deleter.join(timeout=30)
        assert outcome == ["deleted"], outcome
        assert _members(d, gid) == {} and _meta(d, gid)[0] != version
    finally:
        d.close()
        engine.dispose()


def test_a_write_that_keeps_losing_deadlocks_is_a_503_that_says_so(
    directory: Directory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Groups nested in each other, written at once from two processes, made some writes lose
    a deadlock at every attempt: the reply said "the database is unavailable" (it was not).
    The write is tried a few times, after growing pauses, then answered with what happened."""
    from scimd.scim.errors import ScimError
    from scimd.store import directory as directory_mod
    from scimd.store import onloop

    class Deadlock(Exception):
        sqlstate = "40P01"

    tries: list[int] = []
    pauses: list[float] = []

    def lose(*args: Any) -> Any:
        tries.append(1)
        raise sa.exc.OperationalError("UPDATE groups ...", None, Deadlock("deadlock detected"))

    monkeypatch.setattr(directory, "_written_once", lose)
    monkeypatch.setattr(onloop, "pause", pauses.append)
    with pytest.raises(ScimError) as e:
        directory.create("Group", {"displayName": "never"}, audit.CLI, "http://x")
    assert e.value.status == 503 and "deadlock" in e.value.detail
    assert "unavailable" not in e.value.detail
    assert len(tries) == directory_mod._DEADLOCK_ATTEMPTS == len(pauses) + 1
    assert all(0 <= p <= 0.5 for p in pauses)


def test_writes_of_groups_nested_in_each_other_do_not_deadlock(postgres_url: str) -> None:
    """Groups added to each other from many connections, with groups and users deleted
    meanwhile: writes lock the groups they touch in pk order, so they queue and none is a
    deadlock victim (from 12 threads, 1,800 such writes lost 54-277 deadlocks, each retried)."""
    import random
    import time
    import uuid

    engine = create_engine(postgres_url)
    migrate.ensure_current(engine)
    d = Directory(engine)
    gate = _gate()
    groups = [_group(d, f"N{i}") for i in range(6)]
    users = [_user(d, f"n{i}@x.test") for i in range(12)]
    failures: list[str] = []

    def patch(gid: str, op: str, ids: list[str]) -> None:
        body = {"schemas": [PATCH], "Operations": [_op(op, ids)]}
        d.patch("Group", gid, body, gate, BASE, None, render=False)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(40):
            a, b = rng.sample(groups, 2)
            members = [b, *rng.sample(users, 2)]
            kind = rng.choice(["add", "remove", "put", "temporary group", "temporary user"])
            try:
                if kind == "put":
                    doc = {"schemas": [GROUP], "displayName": f"N{groups.index(a)}"}
                    doc["members"] = [{"value": m} for m in members]
                    d.replace("Group", a, doc, gate, BASE, None)
                elif kind.startswith("temporary"):
                    what = "Group" if kind.endswith("group") else "User"
                    body = {"schemas": [GROUP if what == "Group" else USER]}
                    body["displayName" if what == "Group" else "userName"] = uuid.uuid4().hex
                    made = d.create(what, body, gate, BASE).resource
                    assert made is not None
                    for g in (a, b):
                        patch(g, "add", [made["id"]])
                    d.delete(what, made["id"], gate, None)
                else:
                    patch(a, kind, members)
            except Exception as e:
                failures.append(f"{kind}: {e}")

    def deadlocks() -> int:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sa.text(
                        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
                    )
                ).scalar_one()
            )

    before = deadlocks()
    threads = [threading.Thread(target=worker, args=(s,)) for s in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    retries = d.write_retries
    d.close()
    engine.dispose()  # the sessions end, and report their statistics
    time.sleep(1.0)
    after = deadlocks()
    with engine.connect() as conn:  # no group its own ancestor, whatever the interleaving
        cycles = conn.execute(
            sa.text(
                "WITH RECURSIVE d(top, pk) AS (SELECT m.group_pk, g.pk FROM members m"
                " JOIN groups g ON g.id = m.member_id WHERE m.member_type = 'Group' UNION"
                " SELECT d.top, g.pk FROM d JOIN members m ON m.group_pk = d.pk"
                " AND m.member_type = 'Group' JOIN groups g ON g.id = m.member_id)"
                " SELECT count(*) FROM d WHERE d.top = d.pk"
            )
        ).scalar_one()
    engine.dispose()
    # Adding a group that holds the group is refused (a cycle); nothing else may fail.
    assert [f for f in failures if "its own ancestor" not in f] == []
    assert any("its own ancestor" in f for f in failures)
    assert cycles == 0
    assert retries == 0 and after == before


def test_a_group_write_is_authorised_before_its_members_are_judged(directory: Directory) -> None:
    """The members a group write locks first (PostgreSQL, ``_lock_groups``) are read without
    judging them: a caller without access gets its 401, not a 400 about the body."""
    from scimd.scim.errors import InvalidToken

    d = directory
    gid = _group(d, "Guarded")

    def refuses(conn: sa.Connection, v: Any) -> audit.Actor:
        raise InvalidToken("no access")

    put = {"schemas": [GROUP], "displayName": "Guarded", "members": [1, {"value": 2}]}
    with pytest.raises(InvalidToken):
        d.replace("Group", gid, put, refuses, BASE, None)
    bad = {"schemas": [PATCH], "Operations": [{"op": "add", "path": "members", "value": 7}]}
    with pytest.raises(InvalidToken):
        d.patch("Group", gid, bad, refuses, BASE, None)


def test_writes_adding_groups_take_turns_on_postgres(postgres_url: str) -> None:
    """Two writes adding groups at once each checked for a cycle without the other's
    uncommitted membership, and together closed one (B into A and D into C, with C holding D
    ... D holding A). They take turns now: a write adding a group waits for the other."""
    import time

    engine = create_engine(postgres_url)
    migrate.ensure_current(engine)
    d = Directory(engine)
    gate = _gate()
    a, b = _group(d, "TA"), _group(d, "TB")
    watcher = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    done: list[Exception | None] = []
    try:
        with engine.connect() as holder:
            holder.execute(sa.text("SELECT pg_advisory_xact_lock(7305122801)"))

            def add() -> None:
                body = {"schemas": [PATCH], "Operations": [_op("add", [b])]}
                try:
                    d.patch("Group", a, body, gate, BASE, None, render=False)
                    done.append(None)
                except Exception as e:  # reported by the assertion below
                    done.append(e)

            thread = threading.Thread(target=add)
            thread.start()
            with watcher.connect() as watch:
                for _ in range(400):  # until the write waits for the turn
                    waiting = watch.execute(
                        sa.text(
                            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                            " AND NOT granted"
                        )
                    ).scalar_one()
                    if waiting:
                        break
                    time.sleep(0.02)
            assert waiting, "the write adding a group did not wait for its turn"
            assert done == []
            holder.rollback()
        thread.join(30)
        assert done == [None]
    finally:
        d.close()
        watcher.dispose()
        engine.dispose()


def test_a_deleted_member_is_in_the_history_of_its_groups(any_database_url: str) -> None:
    """Each group a deleted user or group left has its own audit record (on PostgreSQL the
    delete is one conditional statement: the same records)."""
    from scimd.store import audit

    engine = create_engine(any_database_url)
    migrate.ensure_current(engine)
    d = Directory(engine)
    gate = _gate()
    try:
        uid = _user(d, "gone@x.test")
        inner = _group(d, "Inner")
        outer = _group(d, "Outer")
        for gid, ids in ((inner, [uid]), (outer, [uid, inner])):
            body = {"schemas": [PATCH], "Operations": [_op("add", ids)]}
            d.patch("Group", gid, body, gate, BASE, None, render=False)
        d.delete("User", uid, gate, None)
        d.delete("Group", inner, gate, None)
        with engine.connect() as conn:
            ops = {
                gid: [
                    (r["operation"], r["resource_type"])
                    for r in audit.history(conn, resource_id=gid)
                ]
                for gid in (inner, outer)
            }
        assert ops[outer][:2] == [("member.delete", "Group"), ("member.delete", "Group")]
        assert ops[inner][:2] == [("delete", "Group"), ("member.delete", "Group")]
    finally:
        d.close()
        engine.dispose()


def _checkpoint_threads() -> int:
    return sum(t.name == "scimd-checkpoint" and t.is_alive() for t in threading.enumerate())


def test_a_checkpointer_started_twice_runs_one_thread_and_stops_it(tmp_path: Path) -> None:
    """A second ``start`` of a running checkpointer changes nothing: after ``stop`` no
    checkpoint thread is left running on a closed connection."""
    engine = create_engine(f"sqlite:///{tmp_path / 'twice.db'}")
    migrate.ensure_current(engine)
    before = _checkpoint_threads()
    ck = Checkpointer(engine, interval=0.001)
    try:
        ck.start()
        ck.start()
        assert _checkpoint_threads() == before + 1
    finally:
        ck.stop()
        engine.dispose()
    assert _checkpoint_threads() == before


def test_a_checkpointer_started_again_after_stop_checkpoints_again(tmp_path: Path) -> None:
    """Stopped (its final TRUNCATE made) and started again, the checkpointer copies the log
    in the background as it did the first time."""
    db = tmp_path / "again.db"
    engine = create_engine(f"sqlite:///{db}")
    migrate.ensure_current(engine)
    ck = _Recording(engine, interval=0.001)
    try:
        ck.start()
        ck.stop()
        assert ck.results[-1][0] == "TRUNCATE"
        ck.start()
        _write(engine, 50)
        with ck.progress:
            done = ck.progress.wait_for(
                lambda: any(m == "PASSIVE" and r[1] > 0 for m, r in ck.results), timeout=60
            )
        assert done, ck.results[-5:]
    finally:
        ck.stop()
        engine.dispose()
    assert ck.results[-1][0] == "TRUNCATE"
    wal = Path(f"{db}-wal")
    assert not wal.exists() or wal.stat().st_size == 0
