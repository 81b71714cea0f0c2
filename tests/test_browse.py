"""The work portal's directory queries (``store.browse``): pages and their links, filters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from scimd.scim.filter import parse
from scimd.store import audit, browse
from scimd.store.directory import Directory
from scimd.store.resources import USERS
from scimd.store.tables import audit as audit_table
from support.stores import opened_directory

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
BASE = "http://scim.test/scim/v2"
APP = audit.Actor("app", "client-1", "Équipe RH", "req-1")


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Directory]:
    with opened_directory(f"sqlite:///{tmp_path / 'b.db'}") as d:
        yield d


def _user(d: Directory, name: str) -> str:
    made = d.create("User", {"schemas": [USER], "userName": name}, APP, BASE).resource
    assert made is not None
    return str(made["id"])


def _find(d: Directory, flt: str | None, **page: int) -> browse.Page:
    with d.read() as conn:
        rt = d.resource_type(conn, "User")
        return browse.find(conn, USERS, rt, parse(flt) if flt else None, **page)


def test_pages_of_users_start_where_asked_and_know_whether_more_follow(
    directory: Directory,
) -> None:
    """``start`` is 1-based and a page says whether another follows, with no row skipped or
    repeated, and no Next link under a last page that happens to be full."""
    names = [_user(directory, f"user{i}@example.com") for i in range(3)]
    first = _find(directory, None, start=1, count=2)
    assert [r.id for r in first.rows] == names[:2] and first.has_next
    last = _find(directory, None, start=3, count=2)
    assert [r.id for r in last.rows] == names[2:] and not last.has_next
    whole = _find(directory, None, start=1, count=3)
    assert [r.id for r in whole.rows] == names and not whole.has_next


def test_a_groups_members_page_by_page_with_their_names(directory: Directory) -> None:
    """A group's members come a page at a time in id order, users with their userName and
    whether they are active, groups with their displayName; an empty group counts 0."""
    names = {_user(directory, f"m{i}@example.com"): f"m{i}@example.com" for i in range(3)}
    ids = sorted(names)
    empty = directory.create("Group", {"displayName": "Empty"}, APP, BASE).resource
    assert empty is not None
    members = [{"value": i} for i in ids] + [{"value": empty["id"], "type": "Group"}]
    group = directory.create("Group", {"displayName": "Staff", "members": members}, APP, BASE)
    assert group.resource is not None
    gid = str(group.resource["id"])
    with directory.read() as conn:
        first = browse.group_members(conn, gid, start=1, count=2)
        rest = browse.group_members(conn, gid, start=3, count=2)
        counts = browse.member_counts(conn, [gid, str(empty["id"])])
    assert counts == {gid: 4, str(empty["id"]): 0}
    every = sorted([*ids, str(empty["id"])])
    assert [m.id for m in first.members] == every[:2] and first.has_next and first.total == 4
    assert [m.id for m in rest.members] == every[2:] and not rest.has_next
    by_id = {m.id: m for m in [*first.members, *rest.members]}
    for i in ids:
        assert (by_id[i].type, by_id[i].name, by_id[i].active) == ("User", names[i], True)
    assert by_id[str(empty["id"])].name == "Empty" and by_id[str(empty["id"])].active is None


def _audit(d: Directory, n: int) -> list[int]:
    with d.engine.begin() as conn:
        for i in range(n):
            audit.record(conn, APP, "create", "User", f"u{i}")
        return [int(pk) for (pk,) in conn.execute(sa.select(audit_table.c.pk))]


def _page(d: Directory, f: browse.AuditQuery | None = None, **at: Any) -> browse.AuditPage:
    with d.read() as conn:
        return browse.audit_page(conn, f or browse.AuditQuery(), count=2, **at)


def test_audit_pages_link_to_older_and_newer_without_repeating_a_row(
    directory: Directory,
) -> None:
    """Keyset pages of the audit log, newest first: each row once going either way, an Older
    link only where older rows exist, a Newer one only where newer rows exist."""
    pks = _audit(directory, 5)[::-1]  # newest first
    first = _page(directory)
    assert [r["pk"] for r in first.rows] == pks[:2]
    assert first.older == pks[1] and first.newer is None
    second = _page(directory, before=first.older)
    assert [r["pk"] for r in second.rows] == pks[2:4]
    assert second.older == pks[3] and second.newer == pks[2]
    last = _page(directory, before=second.older)
    assert [r["pk"] for r in last.rows] == pks[4:] and last.older is None
    back = _page(directory, after=second.newer)
    assert [r["pk"] for r in back.rows] == pks[:2] and back.newer is None
    assert back.older == pks[1]
    middle = _page(directory, after=last.newer)
    assert [r["pk"] for r in middle.rows] == pks[2:4] and middle.newer == pks[2]


def test_an_empty_newer_page_links_back_to_the_row_it_started_after(
    directory: Directory,
) -> None:
    """Going back past the newest row shows nothing; its Older link then shows that row
    again rather than skipping it."""
    newest = max(_audit(directory, 3))
    empty = _page(directory, after=newest)
    assert empty.rows == [] and empty.older is not None
    again = _page(directory, before=empty.older)
    assert again.rows[0]["pk"] == newest


def test_the_audit_filter_on_who_takes_an_application_name_in_any_case(
    directory: Directory,
) -> None:
    """An application is found by its name as well as its client id, in any case, non-ASCII
    letters included ("ÉQUIPE RH" finds "Équipe RH")."""
    _audit(directory, 1)
    for who in ("Équipe RH", "ÉQUIPE RH", "CLIENT-1"):
        page = _page(directory, browse.AuditQuery(who=who))
        assert len(page.rows) == 1, who


def test_the_audit_time_bounds_include_since_and_exclude_until(directory: Directory) -> None:
    """``since`` is inclusive and ``until`` exclusive, even at the row's exact time."""
    _audit(directory, 1)
    with directory.read() as conn:
        (at,) = conn.execute(sa.select(audit_table.c.at)).one()
    assert len(_page(directory, browse.AuditQuery(since=at)).rows) == 1
    assert _page(directory, browse.AuditQuery(until=at)).rows == []
