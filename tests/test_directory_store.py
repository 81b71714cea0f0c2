"""The directory's reads and writes as a client sees them (``scimd.store.directory`` over
``scimd.store.resources``): pages and totals, sorting, audit records and versions, on SQLite
and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from scimd.scim.filter import parse
from scimd.store import audit
from scimd.store.directory import Directory

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BASE = "http://scim.test/scim/v2"


def _gate(conn: sa.Connection, v: Any) -> audit.Actor:
    """What the SCIM API passes: its reads take the one-statement paths, its writes on
    PostgreSQL the conditional ones."""
    return audit.Actor("app", "client-1", "entra", "req-1")


def _user(d: Directory, name: str, **extra: Any) -> str:
    w = d.create("User", {"schemas": [USER], "userName": name, **extra}, audit.CLI, BASE)
    assert w.resource is not None
    return str(w.resource["id"])


def _group(d: Directory, name: str, members: Sequence[str] = ()) -> str:
    body = {"schemas": [GROUP], "displayName": name, "members": [{"value": m} for m in members]}
    w = d.create("Group", body, audit.CLI, BASE)
    assert w.resource is not None
    return str(w.resource["id"])


def _history(d: Directory, rid: str) -> list[dict[str, Any]]:
    with d.engine.connect() as conn:
        return audit.history(conn, resource_id=rid)


def test_a_later_page_of_an_indexed_eq_filter_is_empty(directory: Directory) -> None:
    """``userName eq`` (Entra's probe) has one match: startIndex=2 is past it. The prepared
    lookup answered any startIndex with the match again, so a client paging through the
    filter saw the same user on every page."""
    d = directory
    uid = _user(d, "probe@x.test")
    for gate in (None, _gate):
        first = d.search("User", parse('userName eq "PROBE@x.test"'), BASE, start=1, gate=gate)
        assert (first.total, [r["id"] for r in first.resources]) == (1, [uid])
        later = d.search("User", parse('userName eq "probe@x.test"'), BASE, start=2, gate=gate)
        assert (later.total, later.resources) == (1, [])


def test_a_nested_group_member_refers_to_the_groups_endpoint(directory: Directory) -> None:
    """A member's ``$ref`` is where a client fetches it: a nested group's is under /Groups,
    a user's under /Users (a /Users reference to a group is a 404 there)."""
    d = directory
    uid = _user(d, "ref@x.test")
    inner = _group(d, "Inner")
    outer = _group(d, "Outer", [uid, inner])
    res, _ = d.get("Group", outer, BASE)
    assert {m["value"]: m["$ref"] for m in res["members"]} == {
        uid: f"{BASE}/Users/{uid}",
        inner: f"{BASE}/Groups/{inner}",
    }
    page = d.search("Group", parse('displayName eq "Outer"'), BASE, gate=_gate)
    assert page.resources[0]["members"] == res["members"]


@pytest.mark.parametrize("flt", ['userName sw "ord"', 'userName eq "ord@x.test"', None])
def test_user_groups_are_ordered_by_display_name_without_case_on_every_read(
    directory: Directory, flt: str | None
) -> None:
    """User.groups come in displayName order regardless of case whichever statement read
    them (a filter's page reads them apart from the rows): "beta" between "Alpha" and
    "GAMMA", not after every capital; each refers to its group under /Groups."""
    d = directory
    uid, two = _user(d, "ord@x.test"), _user(d, "ord2@x.test")
    for name, held in (("beta", [uid, two]), ("GAMMA", [uid]), ("Alpha", [uid, two])):
        _group(d, name, held)
    want = {uid: ["Alpha", "beta", "GAMMA"], two: ["Alpha", "beta"]}
    for gate in (None, _gate):
        page = d.search("User", parse(flt) if flt else None, BASE, gate=gate)
        got = {r["id"]: [g["display"] for g in r["groups"]] for r in page.resources}
        assert got == {u: want[u] for u in got} and uid in got, gate
    for u in (uid, two):
        res, _ = d.get("User", u, BASE)
        assert [g["display"] for g in res["groups"]] == want[u]
        assert {g["value"]: g["$ref"] for g in res["groups"]} == {
            g["value"]: f"{BASE}/Groups/{g['value']}" for g in res["groups"]
        }


KEY = b"directory test key"


@pytest.mark.parametrize("count", [1, 2, 3])
def test_a_cursor_walk_across_types_reaches_the_groups_after_a_full_page_of_users(
    directory: Directory, count: int
) -> None:
    """A cursor-paged search of every type (RFC 9865) lists Users, then Groups: a page that
    the users filled exactly must still say that groups follow (a nextCursor), or the walk
    ends without them."""
    d = directory
    users = [_user(d, f"walk{i}@x.test") for i in range(2)]
    groups = [_group(d, f"Walk {i}") for i in range(2)]
    seen: list[str] = []
    cursor = ""
    for _ in range(10):
        page = d.page(None, None, BASE, cursor=cursor, key=KEY, count=count, gate=_gate)
        assert page.total == 4 and len(page.resources) <= count
        seen += [r["id"] for r in page.resources]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == users + groups


def test_a_root_page_that_starts_among_the_users_continues_with_the_first_group(
    directory: Directory,
) -> None:
    """A root search (RFC 7644 §3.4.3) pages Users, then Groups, as one list: a page starting
    at the second user that reaches past the users begins the groups at the first."""
    d = directory
    users = [_user(d, f"root{i}@x.test") for i in range(3)]
    groups = [_group(d, f"Root {i}") for i in range(3)]
    every = users + groups
    for start, count in [(2, 3), (3, 2), (4, 2), (1, 6), (6, 4)]:
        page = d.search_all(None, BASE, start=start, count=count, gate=_gate)
        assert page.total == 6
        assert [r["id"] for r in page.resources] == every[start - 1 : start - 1 + count]


def test_a_sorted_root_search_takes_a_window_of_exactly_the_bound(directory: Directory) -> None:
    """startIndex - 1 + count may reach ROOT_SORT_WINDOW (the bound the error names), not
    one more: the bound itself was refused as tooMany."""
    from scimd.scim.errors import ScimError
    from scimd.store.directory import ROOT_SORT_WINDOW

    d = directory
    uid = _user(d, "window@x.test")
    page = d.search_all(None, BASE, start=1, count=ROOT_SORT_WINDOW, sort_by="userName")
    assert [r["id"] for r in page.resources] == [uid]
    page = d.search_all(None, BASE, start=ROOT_SORT_WINDOW, count=1, sort_by="userName")
    assert page.resources == []
    with pytest.raises(ScimError) as err:
        d.search_all(None, BASE, start=2, count=ROOT_SORT_WINDOW, sort_by="userName")
    assert err.value.scim_type == "tooMany"


@pytest.mark.parametrize("actor", [audit.CLI, _gate], ids=["transaction", "gate"])
def test_a_put_without_the_password_keeps_it(directory: Directory, actor: Any) -> None:
    """``password`` is writeOnly (RFC 7643 §4.1.1): a client's PUT never holds it unless it
    sets one, and must not erase it; a PUT that sends the user back as read is no change."""
    d = directory
    uid = _user(d, "pw@x.test", password="Pw-1-long-enough")
    stored = d.stored_password(uid)
    assert stored is not None and stored != "Pw-1-long-enough"
    body = {"schemas": [USER], "userName": "pw@x.test", "active": True}
    same = d.replace("User", uid, body, actor, BASE, None)
    assert not same.changed and same.etag == 'W/"1"'
    renamed = d.replace("User", uid, {**body, "displayName": "Pw"}, actor, BASE, None)
    assert renamed.changed and d.stored_password(uid) == stored


@pytest.mark.parametrize("actor", [audit.CLI, _gate], ids=["transaction", "gate"])
def test_a_rename_in_another_case_with_an_unknown_member_names_the_member(
    directory: Directory, actor: Any
) -> None:
    """A group's displayName in another case is still its own, not another group's: a PATCH
    renaming it so and adding an unknown id is the 400 naming that id, not a 409 saying the
    name is taken (by the group itself), and changes nothing."""
    from scimd.scim.errors import InvalidValue

    d = directory
    gid = _group(d, "Team")
    _group(d, "Other")
    ops = [
        {"op": "replace", "path": "displayName", "value": "TEAM"},
        {"op": "add", "path": "members", "value": [{"value": "no-such-id"}]},
    ]
    with pytest.raises(InvalidValue, match="no-such-id") as err:
        d.patch("Group", gid, {"schemas": [PATCH], "Operations": ops}, actor, BASE, None)
    assert err.value.status == 400
    res, tag = d.get("Group", gid, BASE)
    assert (res["displayName"], tag) == ("Team", 'W/"1"')


@pytest.mark.parametrize("actor", [audit.CLI, _gate], ids=["transaction", "gate"])
def test_the_record_of_a_patch_removing_active_gives_it_no_value(
    directory: Directory, actor: Any
) -> None:
    """A PATCH's audit record gives the value set to ``active`` (disabled or enabled), and
    none for a remove, whose value is ignored: "active": null there read as a value set."""
    d = directory
    uid = _user(d, "act@x.test", active=False)
    for op in (
        {"op": "replace", "path": "active", "value": True},
        {"op": "remove", "path": "active"},
    ):
        d.patch("User", uid, {"schemas": [PATCH], "Operations": [op]}, actor, BASE, None)
    records = [r for r in _history(d, uid) if r["operation"] == "patch"]
    assert [r["detail"]["operations"] for r in reversed(records)] == [
        [{"op": "replace", "path": "active", "active": True}],
        [{"op": "remove", "path": "active"}],
    ]


@pytest.mark.parametrize("actor", [audit.CLI, _gate], ids=["transaction", "gate"])
def test_a_users_write_compares_only_the_version_of_a_tag_with_groups(
    directory: Directory, actor: Any
) -> None:
    """A user's tag holds a digest of its groups (``W/"1.<digest>"``), which a membership
    change moves; a write's If-Match and If-None-Match compare only its version, since a
    user's groups cannot be written through the user (docs/entra.md, ETags)."""
    from scimd.scim.errors import PreconditionFailed

    d = directory
    uid = _user(d, "tag@x.test")
    _group(d, "First", [uid])
    _, taken = d.get("User", uid, BASE)
    _group(d, "Second", [uid])
    _, now = d.get("User", uid, BASE)
    assert taken != now and taken.startswith('W/"1.') and now.startswith('W/"1.')

    def rename(name: str, **cond: Any) -> Any:
        from scimd.store.resources import Conditions

        ops = [{"op": "replace", "path": "displayName", "value": name}]
        body = {"schemas": [PATCH], "Operations": ops}
        return d.patch("User", uid, body, actor, BASE, Conditions(**cond))

    with pytest.raises(PreconditionFailed):
        rename("Refused", if_none_match=taken)
    written = rename("Taken", if_match=taken)
    assert written.changed and written.etag.startswith('W/"2.')
