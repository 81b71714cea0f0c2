"""Details of writes, from a mutation audit: Entra's value forms (compat), the UPDATE that
leaves unchanged indexed columns out, the version counters (and two first bumps at once), the
lastModified of groups a deleted member leaves, and the WAL checkpointer's start and stop; as a
client, an operator or the portal sees them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from scimd.auth import apps
from scimd.store import audit, browse, migrate, versions
from scimd.store import properties as props
from scimd.store.engine import create_engine
from scimd.store.tables import settings
from support.api import Api, serving

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
PROPS = "urn:ietf:params:scim:schemas:extension:bizagi:2.0:UserProperties"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with serving(
        f"sqlite:///{tmp_path / 'api.db'}", [("Age", "Integer"), ("Score", "Decimal")]
    ) as api:
        yield api


def _members(api: Api, group_id: str) -> list[browse.Member]:
    with api.engine.connect() as conn:
        return browse.group_members(conn, group_id, start=1, count=10).members


# --- Repository.replace: the UPDATE that leaves the indexed columns out ------------------------


def test_a_patch_of_active_alone_is_seen_by_active_filters_and_the_member_list(api: Api) -> None:
    """A PATCH that changes only ``active`` keeps userName and externalId: the UPDATE leaves the
    indexed columns out but must still write the ``active`` column, which filters and the
    portal's member list read."""
    u = api.user("ada", active=True, externalId="e-1")
    g = api.group("eng", [u["id"]])
    r = api.patch(f"/Users/{u['id']}", {"op": "replace", "path": "active", "value": False})
    assert r.status_code == 200, r.text
    assert r.json()["active"] is False
    assert api.ids("/Users", "active eq false") == [u["id"]]
    assert api.ids("/Users", "active eq true") == []
    assert [(m.name, m.active) for m in _members(api, g["id"])] == [("ada", False)]


def test_a_patch_of_external_id_alone_moves_the_external_id_filter(api: Api) -> None:
    """A new externalId with the same userName is a write of the indexed columns."""
    u = api.user("ada", externalId="old")
    r = api.patch(f"/Users/{u['id']}", {"op": "replace", "path": "externalId", "value": "new"})
    assert r.status_code == 200, r.text
    assert api.ids("/Users", 'externalId eq "new"') == [u["id"]]
    assert api.ids("/Users", 'externalId eq "old"') == []


def test_a_rename_keeping_external_id_moves_the_user_name_filter(api: Api) -> None:
    """A new userName with the same externalId is a write of the indexed columns: the old name
    is free again and the new one is taken."""
    u = api.user("ada", externalId="e-1")
    r = api.patch(f"/Users/{u['id']}", {"op": "replace", "path": "userName", "value": "grace"})
    assert r.status_code == 200, r.text
    assert api.ids("/Users", 'userName eq "grace"') == [u["id"]]
    assert api.ids("/Users", 'userName eq "ada"') == []
    assert api.req("POST", "/Users", {"schemas": [USER], "userName": "ADA"}).status_code == 201
    assert api.req("POST", "/Users", {"schemas": [USER], "userName": "GRACE"}).status_code == 409


def test_a_group_rename_moves_the_display_name_filter_and_uniqueness(api: Api) -> None:
    """A group's unique attribute is displayName: renaming a group (same externalId, no
    userName at all) must write its indexed columns."""
    g = api.group("eng")
    r = api.patch(f"/Groups/{g['id']}", {"op": "replace", "path": "displayName", "value": "ops"})
    assert r.status_code in (200, 204), r.text
    assert api.ids("/Groups", 'displayName eq "ops"') == [g["id"]]
    assert api.ids("/Groups", 'displayName eq "eng"') == []
    assert api.req("POST", "/Groups", {"schemas": [GROUP], "displayName": "ENG"}).status_code == 201
    r = api.req("POST", "/Groups", {"schemas": [GROUP], "displayName": "OPS"})
    assert r.status_code == 409


def test_a_rename_in_another_case_shows_in_the_member_list(api: Api) -> None:
    """``ada`` renamed ``Ada`` is a new userName (only the comparison is case-insensitive):
    the portal's member list, which reads the column, shows the new spelling."""
    u = api.user("ada")
    g = api.group("eng", [u["id"]])
    r = api.patch(f"/Users/{u['id']}", {"op": "replace", "path": "userName", "value": "Ada"})
    assert r.status_code == 200, r.text
    assert [m.name for m in _members(api, g["id"])] == ["Ada"]


def test_doc_only_and_indexed_writes_alternate_on_one_user(api: Api) -> None:
    """Writes that leave the indexed columns out and writes that set them, one after the
    other on the same user (their prepared statements differ), each keep every column."""
    u = api.user("ada", externalId="e-1", active=True)
    path = f"/Users/{u['id']}"
    steps = [
        {"op": "replace", "path": "name.givenName", "value": "Ada"},
        {"op": "replace", "path": "userName", "value": "ada2"},
        {"op": "replace", "path": "active", "value": False},
        {"op": "replace", "path": "externalId", "value": "e-2"},
        {"op": "replace", "path": "name.familyName", "value": "Lovelace"},
    ]
    for op in steps:
        r = api.patch(path, op)
        assert r.status_code == 200, r.text
    assert api.ids("/Users", 'userName eq "ada2" and externalId eq "e-2" and active eq false') == [
        u["id"]
    ]
    body = api.req("GET", path).json()
    assert body["name"] == {"givenName": "Ada", "familyName": "Lovelace"}


# --- compat: what real clients send -----------------------------------------------------------


def test_a_long_exact_decimal_string_is_kept_as_its_number(api: Api) -> None:
    """A decimal written as a string with many trailing zeros is still exactly 2.5 (Entra
    sends directory attributes as strings); only past any number's length is it refused."""
    body = {"schemas": [USER], "userName": "ada", PROPS: {"Score": "2.5" + "0" * 45}}
    r = api.req("POST", "/Users", body)
    assert r.status_code == 201, r.text
    assert r.json()[PROPS] == {"Score": 2.5}


def test_an_integer_string_with_padding_is_its_number(api: Api) -> None:
    """Surrounding blanks of a numeric string are not part of the number."""
    body = {"schemas": [USER], "userName": "ada", PROPS: {"Age": " 42" + " " * 45}}
    r = api.req("POST", "/Users", body)
    assert r.status_code == 201, r.text
    assert r.json()[PROPS] == {"Age": 42}


def test_a_string_for_a_complex_attribute_without_value_is_refused_by_name(api: Api) -> None:
    """Only a complex attribute with a ``value`` sub-attribute (``manager``) takes a bare
    string; ``"name": "Ada"`` is a 400 that says what ``name`` must be."""
    r = api.req("POST", "/Users", {"schemas": [USER], "userName": "ada", "name": "Ada"})
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == "'name' values must be JSON objects with sub-attributes"


def test_an_empty_string_manager_means_no_manager(api: Api) -> None:
    """Entra's null-update test clears ``manager`` with ``""``: on POST and in a PATCH it
    means no value, not a manager whose id is empty."""
    r = api.req(
        "POST", "/Users", {"schemas": [USER], "userName": "ada", ENTERPRISE: {"manager": ""}}
    )
    assert r.status_code == 201, r.text
    assert ENTERPRISE not in r.json()
    u = api.user("grace", **{ENTERPRISE: {"manager": {"value": "boss"}}})
    path = f"{ENTERPRISE}:manager"
    r = api.patch(f"/Users/{u['id']}", {"op": "replace", "path": path, "value": ""})
    assert r.status_code == 200, r.text
    assert ENTERPRISE not in r.json()
    assert ENTERPRISE not in api.req("GET", f"/Users/{u['id']}").json()


def test_an_empty_binary_value_is_kept(api: Api) -> None:
    """``""`` is a binary value (base64 of no bytes), kept as sent like any string's: on
    POST and as the value of a filtered PATCH path (it does not delete the certificate)."""
    cert = {"value": "", "display": "c"}
    body = {"schemas": [USER], "userName": "ada", "x509Certificates": [cert]}
    r = api.req("POST", "/Users", body)
    assert r.status_code == 201, r.text
    assert r.json()["x509Certificates"] == [cert]
    # A PATCH giving a certificate's value as "" keeps the certificate and its empty value.
    u = api.user("grace", x509Certificates=[{"value": "QUJD", "type": "work"}])
    path = 'x509Certificates[type eq "work"].value'
    r = api.patch(f"/Users/{u['id']}", {"op": "replace", "path": path, "value": ""})
    assert r.status_code == 200, r.text
    got = api.req("GET", f"/Users/{u['id']}").json()
    assert got["x509Certificates"] == [{"value": "", "type": "work"}]


def test_nulls_inside_lists_and_objects_are_no_value(api: Api) -> None:
    """A null is "no value" at every depth (RFC 7643 §2.5): an element of a list, a
    sub-attribute of an object, a sub-attribute of a list's element."""
    body = {
        "schemas": [USER],
        "userName": "ada",
        "addresses": None,
        "name": {"givenName": "Ada", "familyName": None},
        "emails": [None, {"value": "ada@x.com", "type": None}],
    }
    r = api.req("POST", "/Users", body)
    assert r.status_code == 201, r.text
    got = r.json()
    assert "addresses" not in got
    assert got["name"] == {"givenName": "Ada"}
    assert got["emails"] == [{"value": "ada@x.com"}]


def test_entra_remove_of_several_members_removes_each_of_them(api: Api) -> None:
    """Entra's ``{"op":"Remove","path":"members","value":[...]}`` names the members to
    remove: all of them, and only them."""
    a, b, c = (api.user(n)["id"] for n in ("a", "b", "c"))
    g = api.group("eng", [a, b, c])
    op = {"op": "Remove", "path": "members", "value": [{"value": a}, {"value": c}]}
    r = api.patch(f"/Groups/{g['id']}", op)
    assert r.status_code in (200, 204), r.text
    got = api.req("GET", f"/Groups/{g['id']}").json()
    assert [m["value"] for m in got.get("members", [])] == [b]
    assert [m.id for m in _members(api, g["id"])] == [b]


# --- version counters ---------------------------------------------------------------------------


def test_a_counter_bump_moves_its_counter_by_one_and_no_other_setting(
    any_database_url: str,
) -> None:
    """Revoking an application moves ``auth_version`` and defining a property moves
    ``schema_version``, each by one; every other setting (the properties' URN, the server's
    keys) is left exactly as it was."""
    engine = create_engine(any_database_url)
    try:
        migrate.ensure_current(engine)
        with engine.begin() as conn:
            row, _ = apps.create_app(conn, "t", "bearer", ["USER SYNC"], audit.CLI)
            props.add_property(conn, "Age", "Integer", "", audit.CLI)
            conn.execute(settings.insert().values(key="audit-m6", value="not a number"))
        counters = {versions.SCHEMA, versions.AUTH}

        def others() -> dict[str, Any]:
            with engine.connect() as conn:
                rows = conn.execute(sa.select(settings.c.key, settings.c.value)).all()
            return {k: v for k, v in rows if k not in counters}

        with engine.connect() as conn:
            before = versions.read(conn)
        kept = others()
        assert kept["audit-m6"] == "not a number"
        with engine.begin() as conn:
            apps.revoke_app(conn, row["client_id"], audit.CLI)
        with engine.connect() as conn:
            mid = versions.read(conn)
        assert (mid.schema, mid.auth) == (before.schema, before.auth + 1)
        with engine.begin() as conn:
            props.add_property(conn, "Team", "String", "", audit.CLI)
        with engine.connect() as conn:
            after = versions.read(conn)
            assert versions.read_one(conn, versions.SCHEMA) == after.schema
        assert (after.schema, after.auth) == (before.schema + 1, before.auth + 1)
        assert others() == kept
    finally:
        engine.dispose()


def test_counters_read_once_per_write_transaction_follow_a_bump_and_a_new_transaction(
    tmp_path: Path,
) -> None:
    """A SQLite group commit's creates read the counters once: later reads in the same write
    transaction reuse them. A bump in that transaction (a revocation, a property) is seen by
    the next read, and so is a bump another connection made before the next transaction: a
    revoked token would otherwise still write."""
    engine = create_engine(f"sqlite:///{tmp_path / 'v.db'}")
    try:
        migrate.ensure_current(engine)
        with engine.connect() as conn:
            with conn.begin():
                first = versions.read(conn, write_locked=True)
                assert versions.read(conn, write_locked=True) == first
                versions.bump(conn, versions.AUTH)
                bumped = versions.read(conn, write_locked=True)
                assert (bumped.schema, bumped.auth) == (first.schema, first.auth + 1)
            with engine.begin() as other:
                versions.bump(other, versions.SCHEMA)
            with conn.begin():
                later = versions.read(conn, write_locked=True)
            assert (later.schema, later.auth) == (bumped.schema + 1, bumped.auth)
    finally:
        engine.dispose()


def test_two_first_bumps_at_once_both_count(postgres_url: str) -> None:
    """PostgreSQL: ``auth_version`` has no row until its first bump. Two first bumps at once
    (two applications revoked in two processes on a new database) both found no row to lock,
    and the second INSERT failed on the key: its revocation was rolled back. The second now
    waits for the first and advances the counter past it."""
    engine = create_engine(postgres_url)
    other = create_engine(postgres_url)  # another process's connections
    try:
        migrate.ensure_current(engine)
        with engine.connect() as conn:
            assert versions.read_one(conn, versions.AUTH) == 0  # no row yet
        first = engine.connect()
        first.begin()
        versions.bump(first, versions.AUTH)  # not committed yet
        failed: list[BaseException] = []

        def second() -> None:
            try:
                with other.begin() as conn:
                    versions.bump(conn, versions.AUTH)
            except BaseException as e:  # handed to the test
                failed.append(e)

        waiting = threading.Thread(target=second)
        waiting.start()
        _until_waiting_for_a_lock(postgres_url)
        first.commit()
        first.close()
        waiting.join(30)
        assert not waiting.is_alive()
        assert failed == []
        with engine.connect() as conn:
            assert versions.read_one(conn, versions.AUTH) == 2
    finally:
        engine.dispose()
        other.dispose()


def _until_waiting_for_a_lock(postgres_url: str) -> None:
    """Until a session of this test's database waits for a lock (at most 30 s)."""
    watcher = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    name = sa.engine.make_url(postgres_url).database
    try:
        for _ in range(3000):
            with watcher.connect() as conn:
                waiting = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = :db AND wait_event_type = 'Lock'"
                    ),
                    {"db": name},
                ).scalar_one()
            if waiting:
                return
            threading.Event().wait(0.01)
        raise AssertionError("the second bump never waited for the first")
    finally:
        watcher.dispose()


# --- lastModified of the groups a deleted member leaves -----------------------------------------


@pytest.fixture
def api_both(any_database_url: str) -> Iterator[Api]:
    with serving(any_database_url) as api:
        yield api


def test_a_group_left_by_a_deleted_member_moves_one_millisecond_past_a_later_clock(
    api_both: Api,
) -> None:
    """A group whose lastModified a server with a clock ahead wrote (an afternoon hour, so a
    12-hour clock would show) moves exactly one millisecond on when its member is deleted:
    never back in time, never a whole second."""
    ahead = "2999-01-01T15:30:45.123Z"
    gid, meta = _left_by_its_member(api_both, ahead)
    assert meta["lastModified"] == "2999-01-01T15:30:45.124Z"
    assert api_both.ids("/Groups", f'meta.lastModified gt "{ahead}"') == [gid]


def test_a_group_left_by_a_deleted_member_takes_now_past_an_older_time(api_both: Api) -> None:
    """With the group's own time in the past the new lastModified is now, not a millisecond
    past the old one."""
    old = "2001-01-01T15:30:45.123Z"
    _, meta = _left_by_its_member(api_both, old)
    assert meta["lastModified"] >= meta["created"] > old


def _left_by_its_member(api: Api, last_modified: str) -> tuple[str, dict[str, Any]]:
    """A group whose only member is deleted, its lastModified set to ``last_modified``
    before: its id and its meta afterwards."""
    ada = api.user("ada")["id"]
    gid = api.group("eng", [ada])["id"]
    with api.engine.begin() as conn:
        conn.execute(sa.text("UPDATE groups SET last_modified = :t"), {"t": last_modified})
    assert api.req("DELETE", f"/Users/{ada}").status_code == 204
    return gid, api.req("GET", f"/Groups/{gid}").json()["meta"]
