"""Cursor pagination as a property: on random users, following ``nextCursor`` lists exactly
what one index-paged page of the same query lists, in the same order, for random sorts,
orders, filters and page sizes, on both databases (``Directory.page`` against
``Directory.search``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scimd.scim.filter import parse
from scimd.scim.values import fold
from scimd.store import audit
from scimd.store import properties as props
from scimd.store.directory import Directory
from support.stores import opened_directory

BASE = "http://scim.test/scim/v2"
PROPS = "urn:ietf:params:scim:schemas:extension:bizagi:2.0:UserProperties"
KEY = b"test key"

SORTS = [
    None,
    "userName",
    "title",
    "externalId",  # caseExact
    "active",
    "emails",
    "emails.value",
    "name.familyName",
    "meta.created",
    f"{PROPS}:Age",
    f"{PROPS}:Score",
    f"{PROPS}:Hired",
    f"{PROPS}:Born",
    f"{PROPS}:Member",
]
FILTERS = [None, "title pr", 'title eq "dev"', f"{PROPS}:Age ge 30", "not (active eq true)"]


@pytest.fixture(scope="module")
def directory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Directory]:
    yield from _directory(f"sqlite:///{tmp_path_factory.mktemp('cursor') / 'c.db'}")


@pytest.fixture
def pg_directory(postgres_url: str) -> Iterator[Directory]:
    yield from _directory(postgres_url)


def _directory(url: str) -> Iterator[Directory]:
    with opened_directory(url) as d:
        with d.engine.begin() as conn:
            for name, kind in (
                ("Age", "Integer"),
                ("Score", "Decimal"),
                ("Hired", "DateTime"),
                ("Born", "Date"),
                ("Member", "Boolean"),
            ):
                props.add_property(conn, name, kind, "", audit.CLI)
        yield d


def _maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), value)


user_bodies = st.fixed_dictionaries(
    {},
    optional={
        "title": st.sampled_from(["dev", "Dev", "ops", "", "Zed"]),
        "externalId": st.sampled_from(["a", "A", "b", "B"]),
        "active": st.booleans(),
        "name": st.fixed_dictionaries({"familyName": st.sampled_from(["x", "X", "y"])}),
        "emails": st.lists(
            st.fixed_dictionaries(
                {"value": st.sampled_from(["a@x.com", "B@x.com", "c@x.com"])},
                optional={"primary": st.booleans()},
            ),
            min_size=1,
            max_size=2,
            unique_by=lambda e: fold(e["value"]),
        ).filter(lambda es: sum(bool(e.get("primary")) for e in es) <= 1),
        PROPS: st.fixed_dictionaries(
            {},
            optional={
                "Age": st.sampled_from([20, 30, 30, 41]),
                "Score": st.sampled_from([1.5, 2, 2.0, -3, 10**17]),
                "Hired": st.sampled_from(
                    ["2020-01-02T03:04:05Z", "2020-01-02T04:04:05+01:00", "1999-12-31T23:59:59.5Z"]
                ),
                "Born": st.sampled_from(["1990-05-06", "2001-01-01"]),
                "Member": st.booleans(),
            },
        ),
    },
)


def _walk(d: Directory, name: str | None, **q: Any) -> list[str]:
    ids: list[str] = []
    cursor = ""
    for _ in range(200):
        page = d.page(name, base=BASE, cursor=cursor, key=KEY, **q)
        assert len(page.resources) <= q["count"]
        ids += [r["id"] for r in page.resources]
        if page.next_cursor is None:
            return ids
        assert page.resources, "a cursor after an empty page"
        cursor = page.next_cursor
    raise AssertionError("the walk did not end")


def _check(d: Directory, bodies: list[dict[str, Any]], data: st.DataObject) -> None:
    with d.engine.begin() as conn:  # a fresh set of users for each example
        for table in ("members", "users", "groups"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
        conn.execute(sa.text("UPDATE counters SET value = 0"))
    for i, body in enumerate(bodies):
        d.create("User", {"userName": f"u{i}", **body}, audit.CLI, BASE)
    sort_by = data.draw(st.sampled_from(SORTS), label="sortBy")
    descending = data.draw(st.booleans(), label="descending")
    text = data.draw(st.sampled_from(FILTERS), label="filter")
    count = data.draw(st.integers(min_value=1, max_value=4), label="count")
    q = {
        "flt": parse(text) if text else None,
        "sort_by": sort_by,
        "descending": descending,
    }
    whole = d.search("User", base=BASE, count=1000, **q)
    walked = _walk(d, "User", count=count, **q)
    assert walked == [r["id"] for r in whole.resources]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(bodies=st.lists(user_bodies, max_size=12), data=st.data())
def test_cursor_walks_list_what_index_pages_list(
    directory: Directory, bodies: list[dict[str, Any]], data: st.DataObject
) -> None:
    _check(directory, bodies, data)


@pytest.mark.postgres
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(bodies=st.lists(user_bodies, max_size=12), data=st.data())
def test_cursor_walks_list_what_index_pages_list_on_postgresql(
    pg_directory: Directory, bodies: list[dict[str, Any]], data: st.DataObject
) -> None:
    _check(pg_directory, bodies, data)
