"""Cursor pagination (RFC 9865): following ``nextCursor`` from an empty cursor lists what an
index-paged search lists, in the same order, on both databases; cursors the server did not
issue, or issued for another query, are refused; rows changed between pages neither repeat
nor shift the rows still to come."""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scimd.scim import cursor as C
from scimd.scim.errors import ExpiredCursor, InvalidCursor
from support.live_server import LiveServer, provisioned_server

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PROPS = "urn:ietf:params:scim:schemas:extension:bizagi:2.0:UserProperties"
SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
UNRESERVED = set(string.ascii_letters + string.digits + "-._~")


@pytest.fixture
def server(any_database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    props = {"Age": "Integer", "Score": "Decimal"}
    with provisioned_server(any_database_url, log_dir=tmp_path, user_properties=props) as s:
        yield s


def _client(server: LiveServer) -> httpx.Client:
    headers = {"Authorization": f"Bearer {server.token}"}
    return httpx.Client(base_url=server.base_url, headers=headers, timeout=30)


def _seed(c: httpx.Client, n: int) -> list[str]:
    """``n`` users with titles, ages and scores that repeat, differ in case or are absent."""
    rng = random.Random(7)
    ids = []
    for i in range(n):
        body: dict[str, Any] = {"schemas": [USER], "userName": f"u{i:03d}@example.com"}
        if rng.random() < 0.7:
            body["title"] = rng.choice(["Dev", "dev", "Ops", "Boss", "ops", "Zed"])
        if rng.random() < 0.6:
            body["active"] = rng.random() < 0.5
        if rng.random() < 0.6:
            mails = rng.sample(["a@x.com", "B@x.com", "c@x.com", "b@y.com"], rng.randint(1, 2))
            body["emails"] = [{"value": m, "primary": j == 1} for j, m in enumerate(mails)]
        extra: dict[str, Any] = {}
        if rng.random() < 0.6:
            extra["Age"] = rng.choice([30, 41, 41, 55])
        if rng.random() < 0.6:
            extra["Score"] = rng.choice([1.5, 2, 2.25, -3])
        if extra:
            body[PROPS] = extra
            body["schemas"] = [USER, PROPS]
        r = c.post("/Users", json=body)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids


def _walk(c: httpx.Client, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every page of a cursor-paged search, following nextCursor from an empty cursor."""
    pages = []
    cursor = ""
    while True:
        r = c.get(path, params={**params, "cursor": cursor})
        assert r.status_code == 200, r.text
        page = r.json()
        assert "startIndex" not in page
        assert page["itemsPerPage"] == len(page["Resources"])
        pages.append(page)
        if "nextCursor" not in page:
            return pages
        cursor = page["nextCursor"]
        assert cursor and set(cursor) <= UNRESERVED  # RFC 9865 §2: unreserved characters
        assert len(pages) < 100


def _ids(pages: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for p in pages for r in p["Resources"]]


def test_cursor_pages_list_what_index_pages_list(server: LiveServer) -> None:
    with _client(server) as c:
        _seed(c, 23)
        gids = [c.post("/Groups", json={"displayName": f"g{i}"}).json()["id"] for i in range(3)]
        cases: list[dict[str, Any]] = [
            {},
            {"sortBy": "title"},
            {"sortBy": "title", "sortOrder": "descending"},
            {"sortBy": f"{PROPS}:Age"},
            {"sortBy": f"{PROPS}:Age", "sortOrder": "descending"},
            {"sortBy": f"{PROPS}:Score"},
            {"sortBy": f"{PROPS}:Score", "sortOrder": "descending", "filter": "title pr"},
            {"sortBy": "meta.created", "sortOrder": "descending"},
            {"sortBy": "active"},
            {"sortBy": "active", "sortOrder": "descending"},
            {"sortBy": "emails.value"},
            {"sortBy": "emails", "sortOrder": "descending", "filter": "emails pr"},
            {"sortBy": "meta.lastModified"},
            {"sortBy": "userName", "filter": 'title eq "dev" or title eq "ops"'},
            {"filter": f"{PROPS}:Age gt 35"},
        ]
        for case in cases:
            whole = c.get("/Users", params={**case, "count": 1000}).json()
            for count in (1, 4, 7):
                pages = _walk(c, "/Users", {**case, "count": count})
                assert _ids(pages) == [r["id"] for r in whole["Resources"]], (case, count)
                assert all(p["totalResults"] == whole["totalResults"] for p in pages)
                assert all(len(p["Resources"]) == count for p in pages[:-1])
        # By POST /.search, for one type and across types (users, then groups).
        whole = c.get("/Users", params={"sortBy": "title", "count": 1000}).json()
        seen = _search(c, "/Users/.search", {"count": 4, "sortBy": "title"})
        assert seen == [u["id"] for u in whole["Resources"]]
        every = _search(c, "/.search", {"count": 5})
        assert len(every) == 26 and every[-3:] == gids
        assert every[:23] == _ids(_walk(c, "/Users", {"count": 10}))


def _search(c: httpx.Client, path: str, body: dict[str, Any]) -> list[str]:
    """The ids of every page of a cursor-paged POST .search."""
    body = {"schemas": [SEARCH], **body, "cursor": ""}
    seen: list[str] = []
    while True:
        r = c.post(path, json=body)
        assert r.status_code == 200, r.text
        seen += [u["id"] for u in r.json()["Resources"]]
        if "nextCursor" not in r.json():
            return seen
        body["cursor"] = r.json()["nextCursor"]


def test_rows_changed_between_pages_neither_repeat_nor_shift(server: LiveServer) -> None:
    with _client(server) as c:
        ids = _seed(c, 9)
        first = c.get("/Users", params={"cursor": "", "count": 3}).json()
        assert [u["id"] for u in first["Resources"]] == ids[:3]
        # The page's last row and a row still to come go; a new row comes.
        assert c.delete(f"/Users/{ids[2]}").status_code == 204
        assert c.delete(f"/Users/{ids[4]}").status_code == 204
        new = c.post("/Users", json={"schemas": [USER], "userName": "late@example.com"})
        params = {"cursor": first["nextCursor"], "count": 3}
        second = c.get("/Users", params=params).json()
        assert [u["id"] for u in second["Resources"]] == [ids[3], ids[5], ids[6]]
        third = c.get("/Users", params={"cursor": second["nextCursor"], "count": 3}).json()
        assert [u["id"] for u in third["Resources"]] == [ids[7], ids[8], new.json()["id"]]
        assert "nextCursor" not in third


def test_cursors_of_other_queries_or_servers_are_refused(server: LiveServer) -> None:
    with _client(server) as c:
        _seed(c, 5)
        params = {"count": 2, "sortBy": "title", "filter": 'userName sw "u"'}
        cursor = c.get("/Users", params={**params, "cursor": ""}).json()["nextCursor"]
        # The same query continues, also with another count or projection, and spelled
        # otherwise (names in another case, sortBy with its schema's URN, an empty startIndex
        # as a GET sends it): they were "another query".
        for same in (
            {},
            {"count": 3},
            {"attributes": "userName"},
            {"filter": 'USERNAME SW "u"'},
            {"sortBy": "urn:ietf:params:scim:schemas:core:2.0:User:TITLE"},
            {"startIndex": ""},
        ):
            r = c.get("/Users", params={**params, **same, "cursor": cursor})
            assert r.status_code == 200, r.text
        for changed in (
            {"sortBy": "userName"},
            {"sortOrder": "descending"},
            {"filter": 'userName sw "u0"'},
        ):
            r = c.get("/Users", params={**params, **changed, "cursor": cursor})
            assert (r.status_code, r.json().get("scimType")) == (400, "invalidCursor"), changed
        r = c.get("/Groups", params={"cursor": cursor})
        assert (r.status_code, r.json().get("scimType")) == (400, "invalidCursor")
        for bad in ("garbage", "A", cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB")):
            r = c.get("/Users", params={**params, "cursor": bad})
            assert (r.status_code, r.json().get("scimType")) == (400, "invalidCursor"), bad
            assert "nextCursor" in r.json()["detail"]
        sealed = C.seal(b"another key", "x", C.Position("User", None, 1), 0)
        r = c.get("/Users", params={"cursor": sealed})
        assert (r.status_code, r.json().get("scimType")) == (400, "invalidCursor")
        # Both ways of paging at once; a sorted search across types.
        r = c.get("/Users", params={"cursor": "", "startIndex": 1})
        assert (r.status_code, r.json().get("scimType")) == (400, "invalidValue")
        r = c.post("/.search", json={"schemas": [SEARCH], "cursor": "", "sortBy": "userName"})
        assert (r.status_code, r.json().get("scimType")) == (400, "invalidValue")
        r = c.post("/.search", json={"schemas": [SEARCH], "cursor": 5})
        assert (r.status_code, r.json().get("scimType")) == (400, "invalidValue")
        # A count of 0: the total only, and no cursor to loop on.
        r = c.get("/Users", params={"cursor": "", "count": 0}).json()
        assert r["totalResults"] == 5 and r["Resources"] == [] and "nextCursor" not in r
        # Index paging is the default and unchanged.
        r = c.get("/Users", params={"count": 2}).json()
        assert r["startIndex"] == 1 and "nextCursor" not in r
        spc = c.get("/ServiceProviderConfig").json()["pagination"]
        assert spc == {
            "cursor": True,
            "index": True,
            "defaultPaginationMethod": "index",
            "defaultPageSize": 100,
            "maxPageSize": 1000,
            "cursorTimeout": C.TIMEOUT,
        }


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64),
    st.floats(allow_nan=False),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.text(),
    st.datetimes(timezones=st.none() | st.just(__import__("datetime").timezone.utc)),
)


@given(
    value=values,
    key=st.integers(min_value=0, max_value=2**62),
    kind=st.sampled_from(["User", "Group"]),
)
def test_a_cursor_holds_its_position_exactly(value: Any, key: int, kind: str) -> None:
    position = C.Position(kind, value, key)
    token = C.seal(b"k", "q", position, 1000)
    assert set(token) <= UNRESERVED
    opened = C.open_cursor(b"k", token, "q", 1000 + C.TIMEOUT, C.TIMEOUT)
    assert opened == position and type(opened.value) is type(value)
    with pytest.raises(InvalidCursor):
        C.open_cursor(b"other", token, "q", 1000, C.TIMEOUT)
    with pytest.raises(InvalidCursor):
        C.open_cursor(b"k", token, "another query", 1000, C.TIMEOUT)
    with pytest.raises(ExpiredCursor):
        C.open_cursor(b"k", token, "q", 1001 + C.TIMEOUT, C.TIMEOUT)
    # cursorTimeout is the least a cursor lasts (RFC 9865 §4): also when sealed mid-second.
    late = C.seal(b"k", "q", position, 1000.9)
    assert C.open_cursor(b"k", late, "q", 1000.9 + C.TIMEOUT, C.TIMEOUT) == position


@given(st.text(alphabet=string.ascii_letters + string.digits + "-_=+/", max_size=80))
def test_text_that_is_not_a_cursor_is_invalid(text: str) -> None:
    with pytest.raises(InvalidCursor):
        C.open_cursor(b"k", text, "q", 0, C.TIMEOUT)


def test_a_cursor_sorted_by_a_property_whose_type_changed_is_refused(server: LiveServer) -> None:
    """A property removed and defined again with another type: the old cursor's text was
    compared with numbers (a 500 on PostgreSQL, another order on SQLite)."""
    from support.live_server import add_user_property, run_scimd

    url = server.database_url
    add_user_property(url, "Flip", type_="String")
    with _client(server) as c:
        for i in range(3):
            body = {"schemas": [USER, PROPS], "userName": f"f{i}", PROPS: {"Flip": f"v{i}"}}
            assert c.post("/Users", json=body).status_code == 201
        params = {"sortBy": f"{PROPS}:Flip", "count": 1}
        cursor = c.get("/Users", params={**params, "cursor": ""}).json()["nextCursor"]
        run_scimd("properties", "remove", "Flip", "--yes", "--database-url", url)
        add_user_property(url, "Flip", type_="Integer")
        r = c.get("/Users", params={**params, "cursor": cursor})
        assert (r.status_code, r.json().get("scimType")) == (400, "invalidCursor"), r.text
