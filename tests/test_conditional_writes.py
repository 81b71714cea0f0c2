"""PostgreSQL user writes in one conditional statement (``store.conditional``).

Each applies only if what the request read still holds: the version counters its authorisation
saw and, for a change, the row's version. Otherwise it writes nothing at all (no row, no audit
record, no count) and the directory starts over, so a revocation or a concurrent writer in
between is never overrun.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from scimd.scim.errors import InvalidValue, NotFound, PreconditionFailed, Uniqueness
from scimd.store import audit, conditional, migrate, versions
from scimd.store.directory import Directory
from scimd.store.engine import create_engine
from scimd.store.resources import USERS as USERS_KIND
from scimd.store.tables import audit as audit_table
from scimd.store.tables import counters, users
from support.stores import opened_directory

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BASE = "http://scim.test/scim/v2"
APP = audit.Actor("app", "client-1", "entra", "req-1")


@pytest.fixture
def directory(postgres_url: str) -> Iterator[Directory]:
    with opened_directory(postgres_url) as d:
        yield d


def _state(d: Directory) -> tuple[int, int, int]:
    """Users, audit records and the users counter, read afresh."""
    with d.engine.connect() as conn:
        return (
            conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one(),
            conn.execute(sa.select(sa.func.count()).select_from(audit_table)).scalar_one(),
            conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(counters.c.value), 0)).where(
                    counters.c.name == "User"
                )
            ).scalar_one(),
        )


def _counters(d: Directory) -> versions.Versions:
    with d.read() as conn:
        return versions.read(conn)


def _bump_auth(d: Directory) -> None:
    with d.engine.begin() as conn:
        versions.bump(conn, versions.AUTH)


def test_create_writes_user_count_and_audit_together(directory: Directory) -> None:
    d = directory
    before = _state(d)
    with d.read() as conn:
        rec = conditional.create_user(conn, {"userName": "a@x.com"}, APP, _counters(d))
    assert rec is not None and rec.version == 1
    assert _state(d) == (before[0] + 1, before[1] + 1, before[2] + 1)
    with d.engine.connect() as conn:
        row = conn.execute(sa.select(audit_table).where(audit_table.c.resource_id == rec.id)).one()
    assert (row.actor, row.actor_name, row.operation, row.request_id) == (
        "client-1",
        "entra",
        "create",
        "req-1",
    )


def test_create_after_the_counters_moved_writes_nothing(directory: Directory) -> None:
    d = directory
    seen = _counters(d)
    _bump_auth(d)  # e.g. a secret revoked after the request was authorised
    before = _state(d)
    with d.read() as conn:
        assert conditional.create_user(conn, {"userName": "b@x.com"}, APP, seen) is None
    assert _state(d) == before


def test_create_of_a_taken_user_name_is_a_uniqueness_error(directory: Directory) -> None:
    d = directory
    with d.read() as conn:
        assert conditional.create_user(conn, {"userName": "c@x.com"}, APP, _counters(d))
    before = _state(d)
    with d.read() as conn, pytest.raises(Uniqueness):
        conditional.create_user(conn, {"userName": "C@X.com"}, APP, _counters(d))
    assert _state(d) == before


def _row(d: Directory, name: str) -> Any:
    w = d.create("User", {"schemas": [USER], "userName": name}, audit.CLI, BASE)
    assert w.resource is not None
    with d.read() as conn:
        return d.repos["User"].get_row(conn, w.resource["id"])


def test_replace_of_a_row_that_moved_writes_nothing(directory: Directory) -> None:
    d = directory
    row = _row(d, "d@x.com")
    v = _counters(d)
    with d.read() as conn:
        first = conditional.replace_user(
            conn, row, {**row.doc, "displayName": "One"}, APP, "patch", None, v
        )
    assert first is not None and first.version == 2
    before = _state(d)
    with d.read() as conn:  # a second writer that read version 1 as well
        assert (
            conditional.replace_user(
                conn, row, {**row.doc, "displayName": "Two"}, APP, "patch", None, v
            )
            is None
        )
    assert _state(d) == before
    with d.read() as conn:
        assert d.repos["User"].get_row(conn, row.id).doc["displayName"] == "One"


def test_replace_after_the_counters_moved_writes_nothing(directory: Directory) -> None:
    d = directory
    row = _row(d, "e@x.com")
    seen = _counters(d)
    _bump_auth(d)
    before = _state(d)
    with d.read() as conn:
        assert (
            conditional.replace_user(conn, row, {**row.doc, "title": "t"}, APP, "patch", None, seen)
            is None
        )
    assert _state(d) == before  # no audit record either
    with d.read() as conn:
        again = d.repos["User"].get_row(conn, row.id)
    assert "title" not in again.doc
    assert (again.version, again.last_modified) == (row.version, row.last_modified)


def test_directory_starts_over_when_the_row_moved(directory: Directory) -> None:
    """A PATCH whose read was overtaken re-reads, applies to the new version, and its
    If-Match is checked against that version."""
    d = directory
    row = _row(d, "f@x.com")
    calls = 0
    titles = iter(["T", "U"])

    def gate(conn: sa.Connection, v: versions.Versions) -> audit.Actor:
        nonlocal calls
        calls += 1
        if calls == 1:  # another writer commits between this request's read and write
            op = {"op": "add", "path": "title", "value": next(titles)}
            d.patch("User", row.id, {"schemas": [PATCH], "Operations": [op]}, audit.CLI, BASE, None)
        return APP

    body = {"schemas": [PATCH], "Operations": [{"op": "add", "path": "nickName", "value": "N"}]}
    written = d.patch("User", row.id, body, gate, BASE, None)
    assert calls == 2
    assert written.resource is not None
    assert (written.resource["title"], written.resource["nickName"]) == ("T", "N")
    assert written.etag == 'W/"3"'

    calls = 0  # this time the other writer makes version 4 after the request read 3
    body["Operations"][0]["value"] = "M"  # a change (an unchanged document is not written)
    with pytest.raises(PreconditionFailed):
        d.patch("User", row.id, body, gate, BASE, 'W/"3"')
    assert calls == 2


def test_create_assumes_the_last_seen_counters_and_reads_them_when_they_moved(
    directory: Directory,
) -> None:
    """A create first authorises with the counters this process saw last (no read); when
    they have moved meanwhile, its statement writes nothing and it starts over with a read."""
    d = directory
    seen: list[versions.Versions] = []

    def gate(conn: sa.Connection, v: versions.Versions) -> audit.Actor:
        seen.append(v)
        return APP

    d.get("User", _row(d, "g@x.com").id, BASE, gate=gate)  # leaves the counters it read
    last = seen[-1]
    seen.clear()
    d.create("User", {"schemas": [USER], "userName": "h@x.com"}, gate, BASE)
    assert seen == [last]  # authorised once, with the counters it already knew

    _bump_auth(d)  # e.g. another process revoked a secret
    seen.clear()
    before = _state(d)
    written = d.create("User", {"schemas": [USER], "userName": "i@x.com"}, gate, BASE)
    assert seen == [last, versions.Versions(last.schema, last.auth + 1)]
    assert written.resource is not None and written.resource["userName"] == "i@x.com"
    assert _state(d) == (before[0] + 1, before[1] + 1, before[2] + 1)


GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"


def _group_row(d: Directory, name: str) -> Any:
    w = d.create("Group", {"schemas": [GROUP], "displayName": name}, audit.CLI, BASE)
    assert w.resource is not None
    with d.read() as conn:
        return d.repos["Group"].get_row(conn, w.resource["id"])


def _members(d: Directory, gid: str) -> set[str]:
    w, _ = d.get("Group", gid, BASE)
    return {m["value"] for m in w.get("members", [])}


def _audits(d: Directory, rid: str) -> list[str]:
    with d.engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(audit_table.c.operation)
                .where(audit_table.c.resource_id == rid, audit_table.c.resource_type == "Group")
                .order_by(audit_table.c.pk)
            ).scalars()
        )


def test_group_patch_adds_removes_and_audits_in_one_statement(directory: Directory) -> None:
    d = directory
    a, b, c = (_row(d, f"{x}@g.com").id for x in "abc")
    g = _group_row(d, "Team")
    v = _counters(d)
    with d.read() as conn:
        first = conditional.patch_group(conn, g, g.doc, [a, b], [], APP, {"n": 1}, v, exact=False)
    assert first is not None and first.version == 2
    with d.read() as conn:
        second = conditional.patch_group(
            conn, first, g.doc, [c, c], [a], APP, {"n": 2}, v, exact=False
        )
    assert second is not None and second.version == 3
    assert _members(d, g.id) == {b, c}
    assert _audits(d, g.id) == ["create", "patch", "patch"]


def test_group_patch_with_an_unknown_member_writes_nothing(directory: Directory) -> None:
    d = directory
    a = _row(d, "known@g.com").id
    g = _group_row(d, "Strict")
    with d.read() as conn, pytest.raises(conditional.MissingMembers):
        conditional.patch_group(
            conn, g, g.doc, [a, "no-such-id"], [], APP, None, _counters(d), exact=False
        )
    assert _members(d, g.id) == set()
    assert _audits(d, g.id) == ["create"]
    # Through the directory (the SCIM API's path) the error names the unknown id.
    body = {
        "schemas": [PATCH],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": "no-such-id"}]}],
    }
    with pytest.raises(InvalidValue, match="no-such-id"):
        d.patch("Group", g.id, body, lambda conn, v: APP, BASE, None)
    assert _audits(d, g.id) == ["create"]


def test_group_patch_depends_on_the_group_version_only_when_it_must(
    directory: Directory,
) -> None:
    """Member changes alone apply whatever the group's version (set operations); a new
    document, or an If-Match (``exact``), applies only to the version that was read."""
    d = directory
    a, b = _row(d, "late@g.com").id, _row(d, "later@g.com").id
    g = _group_row(d, "Moving")
    v = _counters(d)
    with d.read() as conn:
        assert conditional.patch_group(conn, g, g.doc, [a], [], APP, None, v, exact=False)
    with d.read() as conn:  # g still says version 1: a member change applies anyway
        moved = conditional.patch_group(conn, g, g.doc, [b], [], APP, None, v, exact=False)
    assert moved is not None and moved.version == 3
    renamed = {**g.doc, "displayName": "Renamed"}
    with d.read() as conn:
        assert conditional.patch_group(conn, g, renamed, [], [a], APP, None, v, exact=False) is None
        assert conditional.patch_group(conn, g, g.doc, [], [a], APP, None, v, exact=True) is None
    assert _members(d, g.id) == {a, b}
    w, etag = d.get("Group", g.id, BASE)
    assert (w["displayName"], etag) == ("Moving", 'W/"3"')


def test_group_patch_that_adds_and_removes_one_id_keeps_the_order(directory: Directory) -> None:
    """Operations on the same member are ordered: such a PATCH runs in a transaction."""
    d = directory
    x, y = _row(d, "x@g.com").id, _row(d, "y@g.com").id
    g = _group_row(d, "Ordered")

    def ops(*pairs: tuple[str, str]) -> dict[str, Any]:
        return {
            "schemas": [PATCH],
            "Operations": [
                {"op": op, "path": "members", "value": [{"value": rid}]} for op, rid in pairs
            ],
        }

    d.patch("Group", g.id, ops(("add", x)), lambda conn, v: APP, BASE, None)
    d.patch(
        "Group",
        g.id,
        ops(("remove", x), ("add", x), ("add", y), ("remove", y)),
        lambda conn, v: APP,
        BASE,
        None,
    )
    assert _members(d, g.id) == {x}


def test_delete_takes_memberships_count_and_audit_along(directory: Directory) -> None:
    d = directory
    u = _row(d, "leaving@g.com")
    g, outer = _group_row(d, "Inner"), _group_row(d, "Outer")
    gate = lambda conn, v: APP  # noqa: E731 - admits
    add = {"schemas": [PATCH], "Operations": [{"op": "add", "path": "members", "value": []}]}
    add["Operations"][0]["value"] = [{"value": u.id}]
    d.patch("Group", g.id, add, gate, BASE, None)
    add["Operations"][0]["value"] = [{"value": g.id}, {"value": u.id}]
    d.patch("Group", outer.id, add, gate, BASE, None)
    before = _state(d)
    with d.read() as conn:
        stale = d.repos["User"].get_row(conn, u.id)
    d.patch(  # another writer moves the user to version 2
        "User",
        u.id,
        {"schemas": [PATCH], "Operations": [{"op": "add", "path": "title", "value": "T"}]},
        gate,
        BASE,
        None,
    )
    with d.read() as conn:
        assert not conditional.delete(conn, USERS_KIND, stale, APP, _counters(d))
    assert _state(d)[0] == before[0] and _members(d, g.id) == {u.id}

    d.delete("User", u.id, gate, None)
    after = _state(d)
    assert (after[0], after[2]) == (before[0] - 1, before[2] - 1)
    assert _members(d, g.id) == set() and _members(d, outer.id) == {g.id}
    with d.engine.connect() as conn:
        ops = conn.execute(
            sa.select(audit_table.c.operation, audit_table.c.actor).where(
                audit_table.c.resource_id == u.id
            )
        ).all()
    assert ("delete", "client-1") in [tuple(r) for r in ops]

    d.delete("Group", g.id, gate, None)  # its own member rows go with it; it leaves Outer
    assert _members(d, outer.id) == set()
    with pytest.raises(NotFound):
        d.delete("Group", g.id, gate, None)


def test_delete_checks_if_match_against_the_version_it_read(directory: Directory) -> None:
    d = directory
    u = _row(d, "guarded@g.com")
    gate = lambda conn, v: APP  # noqa: E731 - admits
    with pytest.raises(PreconditionFailed):
        d.delete("User", u.id, gate, 'W/"7"')
    d.delete("User", u.id, gate, 'W/"1"')
    with pytest.raises(NotFound):
        d.get("User", u.id, BASE)


def test_a_delete_of_a_row_that_moved_leaves_its_groups_versions(directory: Directory) -> None:
    """The DELETE first gives the user's groups new versions (their member lists change);
    when the user had moved and nothing was deleted, those versions were committed anyway:
    a new version of each group, with no change and no audit record."""
    d = directory
    row = _row(d, "moved@x.com")
    g = _group_row(d, "Moved")
    v = _counters(d)
    with d.read() as conn:
        assert conditional.patch_group(conn, g, g.doc, [row.id], [], APP, {"n": 1}, v, exact=False)
        moved = conditional.replace_user(
            conn, row, {**row.doc, "title": "t"}, APP, "patch", None, v
        )
    assert moved is not None
    with d.read() as conn:
        before = d.repos["Group"].get_row(conn, g.id).version
        assert not conditional.delete(conn, USERS_KIND, row, APP, _counters(d))  # stale version
        assert d.repos["Group"].get_row(conn, g.id).version == before
    assert _members(d, g.id) == {row.id}
    assert _audits(d, g.id) == ["create", "patch"]


def test_a_delete_after_the_counters_moved_writes_nothing(directory: Directory) -> None:
    """A token revoked between the request's authorisation and its DELETE must not delete
    anything (as a create or replace does not): the directory starts over and is refused."""
    d = directory
    row = _row(d, "kept@x.com")
    seen = _counters(d)
    _bump_auth(d)  # e.g. the app's secret revoked meanwhile
    before = _state(d)
    with d.read() as conn:
        assert not conditional.delete(conn, USERS_KIND, row, APP, seen)
    assert _state(d) == before
    with d.read() as conn:
        assert d.repos["User"].get_row(conn, row.id) is not None


def test_a_group_patch_after_the_counters_moved_writes_nothing(directory: Directory) -> None:
    """The same for a group's member change: a revoked app must not add members, however
    its request raced the revocation."""
    d = directory
    a = _row(d, "late-member@g.com").id
    g = _group_row(d, "Revoked")
    seen = _counters(d)
    _bump_auth(d)
    with d.read() as conn:
        assert (
            conditional.patch_group(conn, g, g.doc, [a], [], APP, None, seen, exact=False) is None
        )
    assert _members(d, g.id) == set()
    assert _audits(d, g.id) == ["create"]


def test_a_group_renamed_to_a_taken_name_while_adding_an_unknown_member_is_a_409(
    any_database_url: str,
) -> None:
    """Both backends gave different errors for the same PATCH: SQLite a 409 uniqueness (the
    name's unique index), PostgreSQL's single statement a 400 for the unknown member (it
    stops at the members before the name)."""
    engine = create_engine(any_database_url)
    migrate.ensure_current(engine)
    d = Directory(engine)

    def gate(conn: sa.Connection, v: versions.Versions) -> audit.Actor:
        return APP  # an authorised request: PostgreSQL's single-statement path

    try:
        d.create("Group", {"displayName": "Admins"}, audit.CLI, BASE)
        made = d.create("Group", {"displayName": "x"}, audit.CLI, BASE)
        assert made.resource is not None
        ops = [
            {"op": "replace", "path": "displayName", "value": "admins"},
            {"op": "add", "path": "members", "value": [{"value": "0" * 31 + "f"}]},
        ]
        for order in (ops, ops[::-1]):
            body = {"schemas": [PATCH], "Operations": order}
            with pytest.raises(Uniqueness):
                d.patch("Group", made.resource["id"], body, gate, BASE, None)
        body = {"schemas": [PATCH], "Operations": ops[1:]}
        with pytest.raises(InvalidValue, match="unknown id"):
            d.patch("Group", made.resource["id"], body, gate, BASE, None)
    finally:
        d.close()
        engine.dispose()


def test_a_member_change_after_a_later_clock_s_write_moves_last_modified_on(
    directory: Directory,
) -> None:
    """From a review: the membership PATCH applies whatever was written since it read the
    group, and took ``GREATEST(stored, its own time)``: after a write by a server whose clock
    is ahead, the stored time stayed (``lastModified gt`` missed the change) and the reply
    showed a time never stored. Now: a millisecond past the stored time, and that one."""
    d = directory
    a = _row(d, "clock@g.com").id
    g = _group_row(d, "Clocks")  # read now: its time is this clock's
    ahead = "2999-01-01T00:00:00.000Z"
    with d.engine.begin() as conn:  # the other server's write, after g was read
        conn.execute(sa.text("UPDATE groups SET last_modified = :t"), {"t": ahead})
    with d.read() as conn:
        moved = conditional.patch_group(
            conn, g, g.doc, [a], [], APP, None, _counters(d), exact=False
        )
    assert moved is not None and moved.last_modified == "2999-01-01T00:00:00.001Z"
    w, _ = d.get("Group", g.id, BASE)
    assert w["meta"]["lastModified"] == moved.last_modified


def test_writes_after_a_schema_change_write_nothing(directory: Directory) -> None:
    """A write judged against the custom properties as they were (its counters) must not
    apply after they changed: each statement holds the schema counter as well as the
    authorisation's, or a value a removed property no longer allows was stored."""
    d = directory
    row = _row(d, "schema@x.com")
    g = _group_row(d, "Schema")
    seen = _counters(d)
    with d.engine.begin() as conn:
        versions.bump(conn, versions.SCHEMA)  # e.g. a custom property removed meanwhile
    before = _state(d)
    with d.read() as conn:
        assert conditional.create_user(conn, {"userName": "late@x.com"}, APP, seen) is None
        assert (
            conditional.replace_user(conn, row, {**row.doc, "title": "t"}, APP, "patch", None, seen)
            is None
        )
        assert not conditional.delete(conn, USERS_KIND, row, APP, seen)
        assert (
            conditional.patch_group(conn, g, g.doc, [row.id], [], APP, None, seen, exact=False)
            is None
        )
    assert _state(d) == before
    assert _members(d, g.id) == set()


def test_user_writes_are_audited_as_the_operation_they_were(directory: Directory) -> None:
    """The audit record names what was done, with its detail: a create with its userName,
    a PATCH as a patch (not as a replace), with the detail the caller gave."""
    d = directory
    with d.read() as conn:
        made = conditional.create_user(conn, {"userName": "told@x.com"}, APP, _counters(d))
    assert made is not None
    with d.read() as conn:
        row = d.repos["User"].get_row(conn, made.id)
        assert conditional.replace_user(
            conn, row, {**row.doc, "title": "t"}, APP, "patch", {"paths": ["title"]}, _counters(d)
        )
    with d.engine.connect() as conn:
        records = conn.execute(
            sa.select(audit_table.c.operation, audit_table.c.detail)
            .where(audit_table.c.resource_id == made.id)
            .order_by(audit_table.c.pk)
        ).all()
    assert [tuple(r) for r in records] == [
        ("create", {"userName": "told@x.com"}),
        ("patch", {"paths": ["title"]}),
    ]
