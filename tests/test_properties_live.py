"""Custom user properties defined while servers run appear at once in every server process."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from support.live_server import add_user_property, provisioned_server, start_server

PROPS = "urn:ietf:params:scim:schemas:extension:bizagi:2.0:UserProperties"


def _attribute_names(base: str, token: str) -> set[str]:
    r = httpx.get(f"{base}/Schemas", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    schema = next((s for s in r.json()["Resources"] if s["id"] == PROPS), None)
    return {a["name"] for a in schema["attributes"]} if schema else set()


def test_property_added_by_cli_appears_in_two_running_servers(tmp_path: Path) -> None:
    """Two processes on one database both serve a property added after they started."""
    with provisioned_server(f"sqlite:///{tmp_path / 'p.db'}", log_dir=tmp_path) as one:
        second_logs = tmp_path / "second"
        second_logs.mkdir()
        with start_server(one.database_url, log_dir=second_logs) as two:
            base_two = two.scim_url
            assert "Badge" not in _attribute_names(base_two, one.token)
            add_user_property(one.database_url, "Badge", type_="Integer")
            assert "Badge" in _attribute_names(one.base_url, one.token)
            assert "Badge" in _attribute_names(base_two, one.token)
            body = {"userName": "live@x.com", PROPS: {"Badge": "7"}}
            h = {"Authorization": f"Bearer {one.token}"}
            r = httpx.post(f"{base_two}/Users", json=body, headers=h, timeout=10)
            assert r.status_code == 201, r.text
            assert r.json()[PROPS]["Badge"] == 7
            bad = {"userName": "live2@x.com", PROPS: {"Badge": "seven"}}
            r = httpx.post(f"{one.base_url}/Users", json=bad, headers=h, timeout=10)
            assert r.status_code == 400 and "Badge" in r.json()["detail"]


def test_a_create_right_after_a_change_is_judged_by_the_new_definitions(
    any_database_url: str, tmp_path: Path
) -> None:
    """A server that only POSTs (it read nothing since) still sees a property defined, and an
    access revoked, by another process: a create first assumes the counters it saw last, and
    a body those would refuse is judged again with the current ones."""
    from support.live_server import create_app, revoke_app

    with provisioned_server(any_database_url, log_dir=tmp_path) as server:
        h = {"Authorization": f"Bearer {server.token}"}
        users = f"{server.base_url}/Users"
        r = httpx.post(users, json={"userName": "before@x.com"}, headers=h, timeout=10)
        assert r.status_code == 201, r.text
        add_user_property(server.database_url, "Floor", type_="Integer")
        body = {"userName": "after@x.com", PROPS: {"Floor": "3"}}
        r = httpx.post(users, json=body, headers=h, timeout=10)
        assert r.status_code == 201, r.text
        assert r.json()[PROPS]["Floor"] == 3

        other = create_app(server.database_url, "other")
        oh = {"Authorization": f"Bearer {other.client_secret}"}
        r = httpx.post(users, json={"userName": "o@x.com"}, headers=oh, timeout=10)
        assert r.status_code == 201, r.text
        revoke_app(server.database_url, other.client_id)
        # Only an authorised caller learns what is wrong with its body.
        r = httpx.post(users, json={"userName": "o2@x.com", "bogus": 1}, headers=oh, timeout=10)
        assert r.status_code == 401, r.text


def test_removing_a_users_only_property_leaves_no_empty_extension(any_database_url: str) -> None:
    """The user whose only property was removed keeps no ``{}`` extension object: a PUT of
    what a GET returns then changes nothing (it got a new version and an audit record)."""
    from scimd.store import audit, migrate
    from scimd.store import properties as props
    from scimd.store.directory import Directory
    from scimd.store.engine import create_engine

    engine = create_engine(any_database_url)
    migrate.ensure_current(engine)
    with engine.begin() as conn:
        props.add_property(conn, "Only", "String", "", audit.CLI)
        props.add_property(conn, "Kept", "String", "", audit.CLI)
    d = Directory(engine)
    try:
        base = "http://x/scim/v2"
        one = d.create("User", {"userName": "one@x", PROPS: {"Only": "a"}}, audit.CLI, base)
        two = d.create(
            "User", {"userName": "two@x", PROPS: {"Only": "a", "Kept": "b"}}, audit.CLI, base
        )
        three = d.create("User", {"userName": "three@x"}, audit.CLI, base)
        with engine.begin() as conn:
            props.remove_property(conn, "Only", audit.CLI)
        for w, ext in ((one, None), (two, {"Kept": "b"}), (three, None)):
            assert w.resource is not None
            uid = w.resource["id"]
            # The users who lost a value have it in their history (their version moved).
            with engine.connect() as conn:
                ops = [(r["operation"], r["detail"]) for r in audit.history(conn, resource_id=uid)]
            lost = ("property.remove", {"property": "Only", "type": "String"})
            loaded = [(op, json.loads(x) if isinstance(x, str) else x) for op, x in ops]
            assert loaded[:1] == ([lost] if w is not three else [("create", loaded[0][1])])
            with engine.connect() as conn:
                raw = conn.execute(
                    sa.text("SELECT doc FROM users WHERE id = :i"), {"i": uid}
                ).scalar_one()
            doc = raw if isinstance(raw, dict) else json.loads(raw)
            assert doc.get(PROPS) == ext
            got, tag = d.get("User", uid, base)
            again = d.replace("User", uid, got, audit.CLI, base, None)
            assert again.etag == tag and not again.changed
    finally:
        d.close()
        engine.dispose()


def test_removing_a_property_moves_its_holders_last_modified(any_database_url: str) -> None:
    """A user who lost a value changed: its meta.lastModified moves past what it was, so a
    "changed since" search (``meta.lastModified gt T``) finds it, and only it."""
    from scimd.scim.filter import parse
    from scimd.store import audit, migrate
    from scimd.store import properties as props
    from scimd.store.directory import Directory
    from scimd.store.engine import create_engine

    engine = create_engine(any_database_url)
    migrate.ensure_current(engine)
    with engine.begin() as conn:
        props.add_property(conn, "Gone", "String", "", audit.CLI)
    d = Directory(engine)
    try:
        base = "http://x/scim/v2"
        held = d.create("User", {"userName": "held@x", PROPS: {"Gone": "a"}}, audit.CLI, base)
        other = d.create("User", {"userName": "other@x"}, audit.CLI, base)
        assert held.resource is not None and other.resource is not None
        since = max(held.resource["meta"]["lastModified"], other.resource["meta"]["lastModified"])
        with engine.begin() as conn:
            props.remove_property(conn, "Gone", audit.CLI)
        got, _ = d.get("User", held.resource["id"], base)
        assert got["meta"]["lastModified"] > since
        changed = parse(f'meta.lastModified gt "{since}"')
        found = d.search("User", changed, base).resources
        assert [u["userName"] for u in found] == ["held@x"]
    finally:
        d.close()
        engine.dispose()


def test_removing_a_property_while_users_are_written_leaves_none_of_its_values(
    any_database_url: str, tmp_path: Path
) -> None:
    """Writes racing `properties remove` either land before it (their value is stripped) or
    are judged by the definitions after it (a 400). On PostgreSQL a write that committed
    between the strip and the removal's commit kept its value (5-9 of 50 racing POSTs), so a
    later property of the same name and another type read "v59" as an Integer."""
    import threading

    from support.live_server import run_scimd

    with provisioned_server(
        any_database_url, log_dir=tmp_path, user_properties={"Race": "String"}
    ) as server:
        h = {"Authorization": f"Bearer {server.token}"}
        stop = threading.Event()
        statuses: list[int] = []

        def write(worker: int) -> None:
            with httpx.Client(base_url=server.base_url, headers=h, timeout=30) as c:
                n = 0
                while not stop.is_set():
                    n += 1
                    body = {"userName": f"race{worker}-{n}@x", PROPS: {"Race": f"v{n}"}}
                    statuses.append(c.post("/Users", json=body).status_code)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        try:
            run_scimd(
                "properties", "remove", "Race", "--yes", "--database-url", server.database_url
            )
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert set(statuses) <= {201, 400} and 201 in statuses and 400 in statuses, statuses
        engine = sa.create_engine(server.database_url)
        try:
            with engine.connect() as conn:
                docs = conn.execute(sa.text("SELECT doc FROM users")).scalars().all()
        finally:
            engine.dispose()
        kept = [
            d for d in (x if isinstance(x, dict) else json.loads(x) for x in docs) if PROPS in d
        ]
        assert kept == [], f"{len(kept)} of {len(docs)} users kept a removed property's value"


def test_the_same_property_added_twice_at_once_is_one_definition_and_a_clear_error(
    any_database_url: str,
) -> None:
    """Two processes adding "Dup" and "dup" at the same moment: the second waits for the
    first, then gets "already defined" (on PostgreSQL it was the unique index's raw error)."""
    import threading

    from scimd.scim.errors import Uniqueness
    from scimd.store import audit, migrate
    from scimd.store import properties as props
    from scimd.store.engine import create_engine, write_transaction

    engine = create_engine(any_database_url)
    migrate.ensure_current(engine)
    outcome: list[BaseException | None] = []
    try:
        with write_transaction(engine) as first:
            props.add_property(first, "Dup", "String", "", audit.CLI)

            def second() -> None:
                try:
                    with write_transaction(engine) as conn:
                        props.add_property(conn, "dup", "Integer", "", audit.CLI)
                    outcome.append(None)
                except BaseException as e:  # reported below
                    outcome.append(e)

            racer = threading.Thread(target=second)
            racer.start()
            racer.join(0.5)  # it waits for this transaction
            assert racer.is_alive()
        racer.join(30)
        assert len(outcome) == 1 and isinstance(outcome[0], Uniqueness), outcome
        assert "already defined" in str(outcome[0])
        with engine.connect() as conn:
            assert [p.name for p in props.list_properties(conn)] == ["Dup"]
    finally:
        engine.dispose()


def test_a_create_in_a_transaction_and_a_property_removal_are_ordered(postgres_url: str) -> None:
    """A create on the transactional path (after three conditional attempts found the
    counters moving) read them before touching users: a removal committed in between, and
    the create stored a value of the removed property. It now takes users' write lock first,
    so the removal waits for it, then strips the value."""
    import threading
    import time

    from scimd.store import audit, migrate, versions
    from scimd.store import properties as props
    from scimd.store.directory import Directory
    from scimd.store.engine import create_engine, write_transaction

    engine = create_engine(postgres_url)
    migrate.ensure_current(engine)
    with write_transaction(engine) as conn:
        props.add_property(conn, "Race", "String", "", audit.CLI)
    d = Directory(engine)
    calls = [0]
    removal: list[threading.Thread] = []

    def remove() -> None:
        with write_transaction(engine) as conn:
            props.remove_property(conn, "Race", audit.CLI)

    def gate(conn: sa.Connection, v: versions.Versions) -> audit.Actor:
        calls[0] += 1
        if calls[0] <= 3:  # the counters move under each conditional attempt
            with write_transaction(engine) as other:
                versions.bump(other, versions.AUTH)
        else:  # the transactional attempt: a removal starts while it decides
            removal.append(threading.Thread(target=remove))
            removal[0].start()
            time.sleep(0.5)
        return audit.CLI

    try:
        made = d.create("User", {"userName": "r@x", PROPS: {"Race": "v"}}, gate, "http://x")
        removal[0].join(30)
        assert calls[0] == 4 and not removal[0].is_alive()
        assert made.resource is not None
        with engine.connect() as conn:
            raw = conn.execute(
                sa.text("SELECT doc FROM users WHERE id = :i"), {"i": made.resource["id"]}
            ).scalar_one()
            assert props.list_properties(conn) == []
        doc = raw if isinstance(raw, dict) else json.loads(raw)
        assert PROPS not in doc, doc
    finally:
        d.close()
        engine.dispose()


def test_a_removal_waits_for_user_writes_a_bounded_time(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a removal waits for the users table, every new user write queues behind it: a
    transaction left open on users (a psql session) held them all indefinitely. The removal
    now gives up after LOCK_WAIT_MS and says so, removing nothing."""
    from scimd.scim.errors import ScimError
    from scimd.store import audit, migrate
    from scimd.store import properties as props
    from scimd.store.engine import create_engine, write_transaction

    engine = create_engine(postgres_url)
    migrate.ensure_current(engine)
    with write_transaction(engine) as conn:
        props.add_property(conn, "Held", "String", "", audit.CLI)
    monkeypatch.setattr(props, "LOCK_WAIT_MS", 300)
    blocker = engine.connect()
    try:
        blocker.execute(sa.text("UPDATE users SET version = version WHERE false"))  # open
        refused = pytest.raises(ScimError, match="were being written for more than")
        with refused as info, write_transaction(engine) as conn:
            props.remove_property(conn, "Held", audit.CLI)
        assert info.value.status == 503  # busy: retry (the command's exit status 5)
    finally:
        blocker.rollback()
        blocker.close()
    try:
        with write_transaction(engine) as conn:
            assert [p.name for p in props.list_properties(conn)] == ["Held"]
            assert props.remove_property(conn, "Held", audit.CLI)[1] == 0
    finally:
        engine.dispose()


def test_large_decimal_values_read_back_and_compare_alike_on_both_databases(
    any_database_url: str,
) -> None:
    """PostgreSQL's jsonb keeps a double as its shortest digits: 2^60 sent as a double came
    back as 1152921504606847000 (24 away), filters on it disagreed with SQLite's, and 2^63
    came back as a whole number a PUT of the same document then refused."""
    from scimd.scim.filter import parse
    from scimd.store import audit, migrate
    from scimd.store import properties as props
    from scimd.store.directory import Directory
    from scimd.store.engine import create_engine, write_transaction

    engine = create_engine(any_database_url)
    migrate.ensure_current(engine)
    with write_transaction(engine) as conn:
        props.add_property(conn, "Score", "Decimal", "", audit.CLI)
    d = Directory(engine)
    base = "http://x"
    try:
        ids = {}
        values = (
            ("sixty", 2.0**60),
            ("sixty-three", 2.0**63),
            ("half", 3.5),
            ("below", -1.5e19),
            ("big", 1e20),
            ("huge", 1.2345678901234567e25),  # its exact value is not its shortest digits
        )
        for name, value in values:
            made = d.create("User", {"userName": name, PROPS: {"Score": value}}, audit.CLI, base)
            assert made.resource is not None
            ids[name] = made.resource["id"]
        got, _ = d.get("User", ids["sixty"], base)
        assert got[PROPS]["Score"] == 2**60 and isinstance(got[PROPS]["Score"], int)
        for name, uid in ids.items():
            doc, tag = d.get("User", uid, base)
            again = d.replace("User", uid, doc, audit.CLI, base, None)  # what GET gave, back
            assert again.etag == tag and not again.changed, name
        for text, found in (
            (f"{PROPS}:Score eq 1152921504606846976", ["sixty"]),
            (f"{PROPS}:Score eq 1.152921504606847e18", ["sixty"]),
            (f"{PROPS}:Score gt 1152921504606846980 and {PROPS}:Score lt 1e19", ["sixty-three"]),
            (f"{PROPS}:Score ge 9.223372036854776e18 and {PROPS}:Score lt 1e19", ["sixty-three"]),
            (f"{PROPS}:Score lt 4 and {PROPS}:Score gt 0", ["half"]),
            (f"{PROPS}:Score lt -1e19", ["below"]),
            (f"{PROPS}:Score eq 1e20", ["big"]),
            (f"{PROPS}:Score eq 1.2345678901234567e25", ["huge"]),
            (f"{PROPS}:Score gt 1e24", ["huge"]),
        ):
            listed = d.search("User", parse(text), base).resources
            assert sorted(u["userName"] for u in listed) == found, text
    finally:
        d.close()
        engine.dispose()


def test_datetime_offsets_postgresql_cannot_cast_are_stored_in_utc(any_database_url: str) -> None:
    """A DateTime sent at +20:00 (RFC 3339 allows offsets to 23:59) was kept as sent, and
    every filter and sort on its property was then a 500 on PostgreSQL, which casts offsets
    up to 15:59 only. Such values are stored in UTC; "+00:60" and other scripts' digits,
    which Python's parser took, are refused."""
    from scimd.scim.errors import InvalidValue
    from scimd.scim.filter import parse
    from scimd.store import audit, migrate
    from scimd.store import properties as props
    from scimd.store.directory import Directory
    from scimd.store.engine import create_engine, write_transaction

    engine = create_engine(any_database_url)
    migrate.ensure_current(engine)
    with write_transaction(engine) as conn:
        props.add_property(conn, "HiredAt", "DateTime", "", audit.CLI)
    d = Directory(engine)
    base = "http://x"
    try:
        stored = {}
        for name, value in (
            ("east", "2020-01-01T00:00:00+20:00"),  # 2019-12-31T04:00Z
            ("kept", "2020-01-01T00:00:00+15:59"),  # 2019-12-31T08:01Z
            ("west", "2020-01-01T00:00:00-23:59"),  # 2020-01-01T23:59Z
        ):
            made = d.create("User", {"userName": name, PROPS: {"HiredAt": value}}, audit.CLI, base)
            assert made.resource is not None
            stored[name] = made.resource[PROPS]["HiredAt"]
        assert stored == {
            "east": "2019-12-31T04:00:00.000Z",
            "kept": "2020-01-01T00:00:00+15:59",
            "west": "2020-01-01T23:59:00.000Z",
        }
        found = d.search("User", parse(f'{PROPS}:HiredAt gt "2019-12-31T06:00:00Z"'), base)
        assert sorted(u["userName"] for u in found.resources) == ["kept", "west"]
        ordered = d.search("User", None, base, sort_by=f"{PROPS}:HiredAt")
        assert [u["userName"] for u in ordered.resources] == ["east", "kept", "west"]
        for bad in ("2020-01-01T00:00:00+00:60", "2020-01-01T00:00:00.123456\u0663Z"):
            with pytest.raises(InvalidValue, match="HiredAt"):
                d.create("User", {"userName": "bad", PROPS: {"HiredAt": bad}}, audit.CLI, base)
    finally:
        d.close()
        engine.dispose()
