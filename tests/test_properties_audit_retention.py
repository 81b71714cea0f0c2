"""Custom user properties, the audit log and audit retention, from a mutation audit: the
limits of a property's name and description, the explanations a refused name or type gets,
what the audit log says of a property's addition and removal, and what history and prune
leave; as an operator at the command line, a SCIM client or the portal sees them."""

from __future__ import annotations

import html
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient
from typer.testing import CliRunner

from scimd.auth import admins
from scimd.cli.main import app
from scimd.scim.schema import USER_PROPERTIES_SCHEMA as PROPS
from scimd.settings import Settings
from scimd.store import audit
from scimd.store.engine import create_engine
from scimd.store.migrate import ensure_current
from scimd.store.retention import AuditRetention
from scimd.store.tables import audit as audit_table
from scimd.web.app import create_app
from support.api import Api, serving
from support.stores import add_old_audit_records

runner = CliRunner()
WAIT = 60.0  # a bound on waiting for the retention thread, not a measurement
PASSWORD = "long enough pw"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'props.db'}"


def _cli(*args: str) -> Any:
    return runner.invoke(app, list(args))


def _ok(*args: str) -> str:
    result = _cli(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def _listed(db: str) -> list[dict[str, Any]]:
    return list(json.loads(_ok("properties", "list", "--json", "--database-url", db)))


def _records(db: str, *args: str) -> list[dict[str, Any]]:
    return list(json.loads(_ok("audit", "list", "--json", *args, "--database-url", db)))


def _detail(value: Any) -> Any:
    """A record's detail as ``audit.history`` gives it: JSON text, or decoded."""
    return json.loads(value) if isinstance(value, str) else value


def _text(r: Any) -> str:
    """A page's text without tags, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", r.text)).split())


@pytest.fixture
def portal(tmp_path: Path) -> Iterator[tuple[TestClient, Api]]:
    """The portal, signed in as an admin, and a SCIM client, on one database with the custom
    properties Age (Integer) and Badge (String)."""
    url = f"sqlite:///{tmp_path / 'portal.db'}"
    with serving(url, [("Age", "Integer"), ("Badge", "String")]) as api:
        with api.engine.begin() as conn:
            admins.create(conn, "admin", PASSWORD, audit.CLI)
        with TestClient(create_app(Settings(), api.engine)) as client:
            m = CSRF.search(client.get("/admin/login").text)
            assert m
            form = {"username": "admin", "password": PASSWORD, "csrf": html.unescape(m.group(1))}
            r = client.post("/admin/login", data=form, follow_redirects=False)
            assert r.status_code == 303, r.text
            yield client, api


# --- properties add: the limits of a name and a description --------------------------------------


def test_a_name_of_exactly_128_characters_is_a_property(db: str) -> None:
    """The limit is 128 characters: a name of 128 is added (and listed whole), one of 129 is
    refused saying the limit."""
    name = "A" + "b" * 127
    _ok("properties", "add", name, "--type", "String", "--database-url", db)
    assert [p["name"] for p in _listed(db)] == [name]
    r = _cli("properties", "add", name + "c", "--type", "String", "--database-url", db)
    assert r.exit_code == 1 and "at most 128 characters" in r.output


def test_a_description_of_exactly_1024_characters_is_kept(db: str) -> None:
    """A description may be 1024 characters long; at 1025 it is refused saying the limit."""
    text = "d" * 1024
    _ok(
        "properties", "add", "Long", "--type", "String", "--description", text, "--database-url", db
    )
    assert _listed(db)[0]["description"] == text
    r = _cli(
        "properties", "add", "Longer", "--type", "String", "--description", text + "d",
        "--database-url", db,
    )  # fmt: skip
    assert r.exit_code == 1 and "at most 1024 characters" in r.output


def test_a_description_is_kept_without_its_surrounding_spaces(db: str) -> None:
    """A description pasted with spaces around it is listed (and served) without them."""
    _ok("properties", "add", "Grade", "--type", "Integer", "--description", "  grade  ",
        "--database-url", db)  # fmt: skip
    assert _listed(db) == [{"name": "Grade", "type": "Integer", "description": "grade"}]


def test_a_reserved_name_in_any_case_is_explained_as_every_resources_own(db: str) -> None:
    """``META`` and ``Schemas`` are refused with the reason that applies to them (every
    resource's own attributes, RFC 7643 §3.1), whatever their case."""
    for reserved in ("META", "Schemas", "ID"):
        r = _cli("properties", "add", reserved, "--type", "String", "--database-url", db)
        assert r.exit_code == 1 and "name every resource's own attributes" in r.output, r.output
    assert _listed(db) == []


def test_an_unsupported_type_in_capitals_is_explained(db: str) -> None:
    """``--type Reference`` (as Entra's own set-up spells it) says why references are not
    supported, not merely that the type is unknown."""
    r = _cli("properties", "add", "Boss", "--type", "Reference", "--database-url", db)
    assert r.exit_code == 1
    assert "references to other objects are not supported" in r.output, r.output
    r = _cli("properties", "add", "Tags", "--type", "Multi-Valued", "--database-url", db)
    assert r.exit_code == 1 and "multi-valued lists are not supported" in r.output, r.output


def test_the_audit_record_of_an_addition_names_the_type_as_defined(db: str) -> None:
    """``--type integer`` defines an Integer property, and the audit log says Integer."""
    _ok("properties", "add", "Level", "--type", "integer", "--database-url", db)
    (added,) = [r for r in _records(db) if r["operation"] == "property.add"]
    assert (added["resource_type"], added["resource_id"]) == ("UserProperty", "Level")
    assert added["detail"] == {"type": "Integer"}


def test_properties_are_listed_in_the_order_they_were_defined(db: str) -> None:
    """``properties list`` (and /Schemas, the portal) show properties in the order they were
    added, not sorted by name: a new one comes last."""
    for name in ("Zone", "Badge", "level"):
        _ok("properties", "add", name, "--type", "String", "--database-url", db)
    assert [p["name"] for p in _listed(db)] == ["Zone", "Badge", "level"]


# --- the portal's properties page ----------------------------------------------------------------


def test_the_properties_page_counts_only_the_users_holding_a_value(
    portal: tuple[TestClient, Api],
) -> None:
    """The page says, for each property, how many users hold a value (what a removal would
    delete): users without one are not counted."""
    client, api = portal
    api.user("ada", **{PROPS: {"Age": 36}})
    api.user("grace")
    api.user("alan", **{PROPS: {"Age": 41, "Badge": "b-1"}})
    text = _text(client.get("/admin/properties"))
    assert f"Age Integer {PROPS}:Age 2" in text, text
    assert f"Badge String {PROPS}:Badge 1" in text, text


# --- the audit log -------------------------------------------------------------------------------


def test_a_records_request_id_is_the_one_the_client_was_answered_with(tmp_path: Path) -> None:
    """A SCIM write's audit record names the request id its response carried (X-Request-Id),
    so an operator can find the request's log line from ``audit list --json``."""
    with serving(f"sqlite:///{tmp_path / 'api.db'}") as api:
        r = api.req("POST", "/Users", {"schemas": [USER], "userName": "ada"})
        assert r.status_code == 201, r.text
        rid = r.headers["x-request-id"]
        with api.engine.connect() as conn:
            (created,) = audit.history(conn, resource_id=r.json()["id"])
    assert rid and created["request_id"] == rid


# --- audit prune ---------------------------------------------------------------------------------


def _old_records(engine: sa.Engine, n: int) -> None:
    with engine.begin() as conn:
        add_old_audit_records(conn, n, "user.create")


def test_a_prune_stopped_after_some_batches_records_how_many_went(tmp_path: Path) -> None:
    """A prune whose third batch fails (here a trigger refusing one delete) has committed
    the first two: it says so, and the audit log records a prune of those 4, which ``audit
    list`` shows, not of none."""
    engine = create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    ensure_current(engine)
    _old_records(engine, 6)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER keep_old5 BEFORE DELETE ON audit"
            " WHEN OLD.resource_id = 'old5' BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    with pytest.raises(audit.PruneStopped) as stopped:
        audit.prune(engine, "2021-01-01T00:00:00.000Z", audit.CLI, batch=2)
    assert stopped.value.removed == 4
    assert "removed 4 audit record(s), then stopped (disk full)" in stopped.value.detail
    with engine.connect() as conn:
        rows = audit.history(conn)
    engine.dispose()
    assert [r["resource_id"] for r in rows if r["operation"] == "user.create"] == ["old6", "old5"]
    (pruned,) = [r for r in rows if r["operation"] == "audit.prune"]
    detail = _detail(pruned["detail"])
    assert detail == {"before": "2021-01-01T00:00:00.000Z", "removed": 4}


def _aged(engine: sa.Engine, ages: list[float]) -> None:
    with engine.begin() as conn:
        for i, days in enumerate(ages):
            row = audit.values(audit.CLI, "user.create", "User", f"u{i}")
            at = datetime.now(UTC) - timedelta(days=days)
            row["at"] = at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
            conn.execute(audit_table.insert().values(row))


def test_a_prune_goes_on_past_a_young_record_it_already_kept(tmp_path: Path) -> None:
    """Records kept in one batch (one written while a clock ran ahead) must not be read again
    as the next batch's last record and end the prune there: every record older than the
    cutoff goes, however the batches fall."""
    engine = create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    ensure_current(engine)
    _aged(engine, [-30, 40, 1, 40])  # -30: thirty days in the future
    removed = audit.prune(engine, audit.cutoff(10), audit.CLI, batch=2, record_empty=False)
    with engine.connect() as conn:
        rows = audit.history(conn)
    engine.dispose()
    assert removed == 2
    assert [r["resource_id"] for r in rows if r["operation"] == "user.create"] == ["u2", "u0"]


# --- audit retention -----------------------------------------------------------------------------


def _user_records(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        rows = audit.history(conn, limit=1000)
    return [r["resource_id"] for r in rows if r["operation"] == "user.create"]


def _wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what}")
        time.sleep(0.05)


def test_retention_prunes_again_after_a_prune_that_failed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A prune that fails (a retention whose cutoff is no date, then the database refusing the
    delete) is logged and does not end the thread: once the cause is gone, the next prune
    removes the old records."""
    engine = create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    ensure_current(engine)
    _aged(engine, [40, 1])
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'no'); END"
        )

    def logged(level: str, text: str) -> bool:
        return any(r.levelname == level and text in r.getMessage() for r in caplog.records)

    retention = AuditRetention(engine, 10**6, interval=0.05, pause=0)  # year -700: no date
    retention.start()
    try:
        _wait_for(lambda: logged("ERROR", "the prune failed"), "a prune failing on its date")
        retention.days = 10
        _wait_for(lambda: logged("WARNING", "the prune failed"), "a prune failing on a delete")
        assert _user_records(engine) == ["u1", "u0"]
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER refuse")
        _wait_for(lambda: _user_records(engine) == ["u1"], "a prune after the failures")
    finally:
        retention.stop()
        engine.dispose()


def test_a_server_stopping_ends_its_prune_after_the_batch_in_progress(tmp_path: Path) -> None:
    """A prune of more than one batch, asked to stop, ends after its first batch and records
    what went; the rest waits for the next start."""
    engine = create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    ensure_current(engine)
    at = (datetime.now(UTC) - timedelta(days=40)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    rows = []
    for i in range(audit.PRUNE_BATCH + 3):
        row = audit.values(audit.CLI, "user.create", "User", f"u{i}")
        row["at"] = at
        rows.append(row)
    with engine.begin() as conn:
        conn.execute(audit_table.insert(), rows)
    stopping = threading.Event()
    stopping.set()
    removed = AuditRetention(engine, 10, pause=0).prune(stopping)
    assert removed == audit.PRUNE_BATCH
    assert _user_records(engine) == ["u5002", "u5001", "u5000"]
    with engine.connect() as conn:
        (pruned,) = [r for r in audit.history(conn) if r["operation"] == "audit.prune"]
    engine.dispose()
    assert (pruned["actor_type"], pruned["actor_name"]) == ("system", "audit retention")
    assert _detail(pruned["detail"])["removed"] == audit.PRUNE_BATCH


def test_retention_logs_what_a_prune_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator reading the server's log sees how many records each prune removed, and
    nothing from the hourly prunes that found nothing."""
    caplog.set_level(logging.INFO, logger="scimd.store")
    engine = create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    ensure_current(engine)
    _aged(engine, [40, 30, 1])
    retention = AuditRetention(engine, 10, interval=0.05, pause=0)
    retention.start()
    try:
        _wait_for(lambda: _user_records(engine) == ["u2"], "the first prune")
        _wait_for(lambda: "removed 2 record(s)" in caplog.text, "its log line")
        time.sleep(0.2)  # a few prunes that find nothing
    finally:
        retention.stop()
        engine.dispose()
    said = [r.getMessage() for r in caplog.records if "audit retention" in r.getMessage()]
    assert said == ["audit retention: removed 2 record(s) older than 10 day(s)"], said


def test_a_stopped_retention_prunes_no_more_and_a_restarted_one_prunes_again(
    tmp_path: Path,
) -> None:
    """A server's shutdown stops its retention: records older than the days kept that are
    written afterwards stay. Started again (the app's lifespan run again), it prunes them."""
    engine = create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    ensure_current(engine)
    _aged(engine, [40])
    retention = AuditRetention(engine, 10, interval=0.05, pause=0)
    retention.start()
    try:
        _wait_for(lambda: _user_records(engine) == [], "the first prune")
        retention.stop()
        _aged(engine, [50])
        time.sleep(0.3)  # what would be several prunes
        assert _user_records(engine) == ["u0"]
        retention.start()
        _wait_for(lambda: _user_records(engine) == [], "a prune after the restart")
    finally:
        retention.stop()
        engine.dispose()
