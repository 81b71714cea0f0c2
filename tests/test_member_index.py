"""SQLite's member -> groups index (``store/member_index.py``, migration 0007): pending pairs,
applied in batches, never change what a reader sees.

A state machine drives the store through random member adds, removes, replaces, clears and
deletes of users and groups (groups nested in groups), with partial applies in between, and
checks after every step that each user's ``groups``, the ``members.value`` and ``groups.value``
filters and each group's members agree with a model, and that ``member_groups`` differs from
``members`` only by pending pairs. Then the background thread of ``scimd serve``, and the
migration of a database that already has memberships.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from scimd.scim.filter import parse
from scimd.store import audit, migrate
from scimd.store import member_index as MI
from scimd.store.directory import Directory
from scimd.store.engine import create_engine

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BASE = "http://scim.test/scim/v2"
# More examples with fresh seeds: SCIMD_FUZZ_EXAMPLES (as for tests/test_state_machine.py).
EXAMPLES = int(os.environ.get("SCIMD_FUZZ_EXAMPLES", "0")) or 25


def _sqlite(path: Path) -> sa.Engine:
    engine = create_engine(f"sqlite:///{path}")
    migrate.ensure_current(engine)
    return engine


def _user(d: Directory, name: str) -> str:
    w = d.create("User", {"schemas": [USER], "userName": name}, audit.CLI, BASE)
    assert w.resource is not None
    return str(w.resource["id"])


def _group(d: Directory, name: str) -> str:
    w = d.create("Group", {"schemas": [GROUP], "displayName": name}, audit.CLI, BASE)
    assert w.resource is not None
    return str(w.resource["id"])


def _patch(d: Directory, gid: str, *ops: dict[str, Any]) -> None:
    d.patch("Group", gid, {"schemas": [PATCH], "Operations": list(ops)}, audit.CLI, BASE, None)


def _members_op(op: str, ids: list[str]) -> dict[str, Any]:
    return {"op": op, "path": "members", "value": [{"value": i} for i in ids]}


def _pairs(engine: sa.Engine, table: str) -> set[tuple[str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT member_id, group_pk FROM {table}"))
        return {(str(m), int(g)) for m, g in rows}


def _memberships(engine: sa.Engine) -> set[tuple[str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT member_id, group_pk FROM members"))
        return {(str(m), int(g)) for m, g in rows}


def _check_index(engine: sa.Engine) -> None:
    """``member_groups`` differs from the memberships only by pending pairs."""
    pending = _pairs(engine, "member_groups_pending")
    assert _pairs(engine, "member_groups") ^ _memberships(engine) <= pending


def _apply(engine: sa.Engine, limit: int) -> int:
    with engine.begin() as conn:
        return MI.apply_pending(conn, limit)


class MemberIndexMachine(RuleBasedStateMachine):
    """Four user slots and three group slots; a deleted one is re-created under a new id."""

    engine: sa.Engine

    def __init__(self) -> None:
        super().__init__()
        self.d = Directory(self.engine)
        self.run = next(_RUNS)
        self.serial = 0
        self.users = [self._new_user() for _ in range(4)]
        self.groups = [self._new_group() for _ in range(3)]
        self.members: dict[str, set[str]] = {g: set() for g in self.groups}

    def teardown(self) -> None:
        self.d.close()

    def _name(self) -> str:
        self.serial += 1
        return f"r{self.run}-{self.serial}"

    def _new_user(self) -> str:
        return _user(self.d, f"{self._name()}@x.test")

    def _new_group(self) -> str:
        return _group(self.d, self._name())

    def _ids(self, picks: list[int]) -> list[str]:
        """Members by slot: 0-3 users, 4-6 groups."""
        every = self.users + self.groups
        return [every[i] for i in picks]

    @rule(g=st.integers(0, 2), picks=st.lists(st.integers(0, 6), min_size=1, max_size=5))
    def add(self, g: int, picks: list[int]) -> None:
        gid = self.groups[g]
        ids = [i for i in self._ids(picks) if i != gid]
        if not ids:
            return
        _patch(self.d, gid, _members_op("Add", ids))
        self.members[gid] |= set(ids)

    @rule(g=st.integers(0, 2), picks=st.lists(st.integers(0, 6), min_size=1, max_size=5))
    def remove(self, g: int, picks: list[int]) -> None:
        gid = self.groups[g]
        ids = self._ids(picks)
        _patch(self.d, gid, _members_op("Remove", ids))
        self.members[gid] -= set(ids)

    @rule(g=st.integers(0, 2), picks=st.lists(st.integers(0, 6), max_size=4))
    def replace(self, g: int, picks: list[int]) -> None:
        gid = self.groups[g]
        ids = [i for i in self._ids(picks) if i != gid]
        _patch(self.d, gid, _members_op("replace", ids))
        self.members[gid] = set(ids)

    @rule(g=st.integers(0, 2))
    def clear(self, g: int) -> None:
        gid = self.groups[g]
        _patch(self.d, gid, {"op": "remove", "path": "members"})
        self.members[gid] = set()

    @rule(u=st.integers(0, 3))
    def delete_user(self, u: int) -> None:
        uid = self.users[u]
        self.d.delete("User", uid, audit.CLI, None)
        for held in self.members.values():
            held.discard(uid)
        self.users[u] = self._new_user()

    @rule(g=st.integers(0, 2))
    def delete_group(self, g: int) -> None:
        gid = self.groups[g]
        self.d.delete("Group", gid, audit.CLI, None)
        del self.members[gid]
        for held in self.members.values():
            held.discard(gid)
        self.groups[g] = self._new_group()
        self.members[self.groups[g]] = set()

    @rule(limit=st.sampled_from([1, 2, 3, 1000]))
    def apply(self, limit: int) -> None:
        before = _pairs(self.engine, "member_groups_pending")
        done = _apply(self.engine, limit)
        assert done == min(limit, len(before))
        assert _pairs(self.engine, "member_groups_pending") == set(sorted(before)[limit:])

    @invariant()
    def index_differs_only_by_pending_pairs(self) -> None:
        _check_index(self.engine)

    @invariant()
    def users_and_groups_read_as_the_model(self) -> None:
        for mid in self.users + self.groups:
            expected = {g for g, held in self.members.items() if mid in held}
            if mid in self.users:
                res, _ = self.d.get("User", mid, BASE)
                assert {g["value"] for g in res.get("groups", [])} == expected
                for gid in expected:
                    found = self.d.search("User", parse(f'groups.value eq "{gid}"'), BASE)
                    assert mid in {r["id"] for r in found.resources}
            listing = self.d.search("Group", parse(f'members.value eq "{mid}"'), BASE)
            assert {r["id"] for r in listing.resources} == expected
        page = self.d.search("User", None, BASE, count=1000)  # many users: one statement
        for res in page.resources:
            if res["id"] in self.users:
                held = {g for g, m in self.members.items() if res["id"] in m}
                assert {g["value"] for g in res.get("groups", [])} == held
        for gid, held in self.members.items():
            res, _ = self.d.get("Group", gid, BASE)
            assert {m["value"] for m in res.get("members", [])} == held


_RUNS = iter(range(1_000_000))


def test_pending_pairs_never_change_what_readers_see(tmp_path: Path) -> None:
    engine = _sqlite(tmp_path / "index.db")
    MemberIndexMachine.engine = engine
    try:
        run_state_machine_as_test(
            MemberIndexMachine,
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        engine.dispose()


def test_a_member_change_writes_a_pending_pair_not_the_index(tmp_path: Path) -> None:
    """What the design is for: a PATCH leaves ``member_groups`` alone (the pairs wait in the
    small table), and an apply moves them over in one go."""
    engine = _sqlite(tmp_path / "pending.db")
    d = Directory(engine)
    users = [_user(d, f"p{i}@x.test") for i in range(5)]
    gid = _group(d, "Pending")
    with engine.connect() as conn:
        gpk = conn.execute(sa.text("SELECT pk FROM groups WHERE id = :id"), {"id": gid}).scalar()
    _patch(d, gid, _members_op("Add", users))
    assert _pairs(engine, "member_groups") == set()
    assert _pairs(engine, "member_groups_pending") == {(u, gpk) for u in users}
    assert _apply(engine, 1000) == 5
    assert _pairs(engine, "member_groups") == {(u, gpk) for u in users}
    assert _pairs(engine, "member_groups_pending") == set()

    # Added and removed again before an apply: the index never sees it.
    extra = _user(d, "late@x.test")
    _patch(d, gid, _members_op("Add", [extra]))
    _patch(d, gid, _members_op("Remove", [extra, users[0]]))
    assert _pairs(engine, "member_groups_pending") == {(extra, gpk), (users[0], gpk)}
    assert _apply(engine, 1000) == 2
    assert _pairs(engine, "member_groups") == {(u, gpk) for u in users[1:]}
    d.close()
    engine.dispose()


def _wait_until(check: Any, what: str) -> None:
    """A bounded wait for the background thread (not a timing assertion)."""
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, f"still waiting for: {what}"
        time.sleep(0.02)


def test_the_server_thread_applies_pending_pairs_and_waits_for_a_busy_database(
    tmp_path: Path,
) -> None:
    engine = _sqlite(tmp_path / "thread.db")
    d = Directory(engine)
    users = [_user(d, f"t{i}@x.test") for i in range(1200)]
    gid = _group(d, "Threaded")
    _patch(d, gid, _members_op("Add", users))
    assert len(_pairs(engine, "member_groups_pending")) == 1200

    # Another process holds the write lock: the thread neither fails nor waits inside SQLite.
    blocker = sqlite3.connect(tmp_path / "thread.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    indexer = MI.MemberIndexer(engine, interval=0.05, batch=500, poll=0.005)
    indexer.start()
    try:
        time.sleep(0.2)
        assert len(_pairs(engine, "member_groups_pending")) == 1200
        blocker.execute("ROLLBACK")
        _wait_until(lambda: not _pairs(engine, "member_groups_pending"), "an empty pending list")
        assert _pairs(engine, "member_groups") == _memberships(engine)
        # Later changes too.
        _patch(d, gid, _members_op("Remove", users[:10]))
        _wait_until(lambda: not _pairs(engine, "member_groups_pending"), "the removes applied")
        assert _pairs(engine, "member_groups") == _memberships(engine)
    finally:
        indexer.stop()
        blocker.close()
    assert not any(t.name == "scimd-member-index" for t in threading.enumerate())
    d.close()
    engine.dispose()


def test_the_indexer_ignores_postgres_and_memory(any_database_url: str) -> None:
    engine = create_engine(any_database_url)
    indexer = MI.MemberIndexer(engine)
    assert indexer.applies(engine) == (engine.dialect.name == "sqlite")
    memory = create_engine("sqlite://")
    assert not MI.MemberIndexer.applies(memory)
    engine.dispose()
    memory.dispose()


@pytest.fixture
def at_0006(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate.upgrade(engine, "0006")
    yield engine
    engine.dispose()


def test_migration_0007_indexes_existing_memberships_and_downgrades(
    at_0006: sa.Engine,
) -> None:
    engine = at_0006
    with engine.begin() as conn:
        for pk, gid in ((1, "g-1"), (2, "g-2")):
            conn.execute(
                sa.text(
                    "INSERT INTO groups (pk, id, display_name, display_name_lower, created,"
                    " last_modified, version, doc) VALUES (:pk, :id, :id, :id, '', '', 1, '{}')"
                ),
                {"pk": pk, "id": gid},
            )
        conn.execute(
            sa.text(
                "INSERT INTO members (group_pk, member_id, member_type) VALUES"
                " (1, 'u-1', 'User'), (1, 'u-2', 'User'), (2, 'u-1', 'User'), (2, 'g-1', 'Group')"
            )
        )
    migrate.ensure_current(engine)
    assert _pairs(engine, "member_groups") == {("u-1", 1), ("u-2", 1), ("u-1", 2), ("g-1", 2)}
    assert _pairs(engine, "member_groups_pending") == set()
    with engine.connect() as conn:
        indexes = {i["name"] for i in sa.inspect(conn).get_indexes("members")}
    assert "ix_members_member_id" not in indexes
    d = Directory(engine)
    res, _ = d.get("Group", "g-2", BASE)  # the pairs read back as memberships
    assert {m["value"] for m in res["members"]} == {"u-1", "g-1"}
    d.close()

    with engine.begin() as conn:
        cfg = migrate._config(conn)
        command.downgrade(cfg, "0006")
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        assert "ix_members_member_id" in {i["name"] for i in inspector.get_indexes("members")}
        assert "member_groups" not in inspector.get_table_names()
        triggers = conn.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
        assert list(triggers) == []
    assert len(_memberships(engine)) == 4


def test_a_membership_whose_key_changes_leaves_both_pairs_pending(tmp_path: Path) -> None:
    """Nothing in scimd updates a membership's key; should anything, readers stay right."""
    engine = _sqlite(tmp_path / "moved.db")
    d = Directory(engine)
    a, b = _user(d, "a@x.test"), _user(d, "b@x.test")
    gid = _group(d, "Moved")
    _patch(d, gid, _members_op("Add", [a]))
    _apply(engine, 1000)
    with engine.begin() as conn:
        move = sa.text("UPDATE members SET member_id = :b WHERE member_id = :a")
        conn.execute(move, {"a": a, "b": b})
    _check_index(engine)
    assert {g["value"] for g in d.get("User", b, BASE)[0].get("groups", [])} == {gid}
    assert d.get("User", a, BASE)[0].get("groups", []) == []
    d.close()
    engine.dispose()


def test_a_full_disk_is_reported_as_such(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SQLite rolls back by itself on a full disk; the thread's own ROLLBACK then failed and
    its "no transaction is active" was logged instead of the cause."""
    engine = _sqlite(tmp_path / "full.db")
    d = Directory(engine)
    users = [_user(d, f"f{i}@x.test") for i in range(300)]
    gid = _group(d, "Full")
    _patch(d, gid, _members_op("Add", users))
    indexer = MI.MemberIndexer(engine, interval=0.01, poll=0.005)
    indexer.start()
    try:
        db = indexer._conn.dbapi_connection
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count={pages}")  # this connection cannot grow the file
        with caplog.at_level("WARNING", logger="scimd.store"):
            _wait_until(lambda: "applying pending" in caplog.text, "a warning")
    finally:
        indexer.stop()
    assert "full" in caplog.text, caplog.text
    assert "no transaction is active" not in caplog.text
    assert len(_pairs(engine, "member_groups_pending")) == 300  # nothing half-applied
    _check_index(engine)
    d.close()
    engine.dispose()


def test_two_servers_on_one_file_churn_members_and_agree_afterwards(tmp_path: Path) -> None:
    """Two ``scimd serve`` processes on one SQLite file, each with its own indexer thread,
    add and remove members of the same groups concurrently (bounded: 480 PATCHes). Every
    read during the churn and after it matches the memberships, and once the pending pairs
    are applied ``member_groups`` holds exactly the memberships."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from support.live_server import create_app, sqlite_url, start_server

    path = tmp_path / "two.db"
    url = sqlite_url(path)
    creds = create_app(url, "entra")
    headers = {"Authorization": f"Bearer {creds.client_secret}"}
    with (
        start_server(url, log_dir=tmp_path / "a") as a,
        start_server(url, log_dir=tmp_path / "b") as b,
        httpx.Client(base_url=a.scim_url, headers=headers, timeout=30) as ca,
        httpx.Client(base_url=b.scim_url, headers=headers, timeout=30) as cb,
    ):
        users = []
        for i in range(40):
            r = ca.post("/Users", json={"schemas": [USER], "userName": f"two{i}@x.test"})
            assert r.status_code == 201, r.text
            users.append(r.json()["id"])
        groups = []
        for g in range(3):
            r = cb.post("/Groups", json={"schemas": [GROUP], "displayName": f"Two{g}"})
            assert r.status_code == 201, r.text
            groups.append(r.json()["id"])

        def worker(w: int) -> None:
            rng = random.Random(w)
            client = ca if w % 2 else cb
            for _ in range(60):
                op = rng.choice(["add", "remove"])
                picks = rng.sample(users, rng.randint(1, 10))
                body = {
                    "schemas": [PATCH],
                    "Operations": [
                        {"op": op, "path": "members", "value": [{"value": u} for u in picks]}
                    ],
                }
                r = client.patch(f"/Groups/{rng.choice(groups)}", json=body)
                assert r.status_code in (200, 204), r.text

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(worker, range(8)))

        def agree(client: httpx.Client) -> None:
            held = {
                g: {m["value"] for m in client.get(f"/Groups/{g}").json().get("members", [])}
                for g in groups
            }
            for u in users:
                got = {x["value"] for x in client.get(f"/Users/{u}").json().get("groups", [])}
                assert got == {g for g in groups if u in held[g]}

        agree(ca)  # pending pairs or not
        engine = create_engine(url)
        try:
            _wait_until(lambda: not _pairs(engine, "member_groups_pending"), "pairs applied")
            assert _pairs(engine, "member_groups") == _memberships(engine)
        finally:
            engine.dispose()
        agree(cb)
