"""Audit retention: a server set to keep N days of audit records deletes the older ones."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from scimd.settings import SettingsError, load
from scimd.store import audit
from scimd.store.engine import create_engine
from scimd.store.migrate import ensure_current
from scimd.store.retention import AuditRetention
from scimd.store.tables import audit as audit_table
from support.live_server import sqlite_url, start_server
from support.stores import add_old_audit_records

WAIT = 60.0  # a bound on waiting for the thread, not a measurement


def _age(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _add(engine: sa.Engine, ages: list[float]) -> None:
    with engine.begin() as conn:
        for i, days in enumerate(ages):
            row = audit.values(audit.CLI, "user.create", "User", f"u{days}-{i}")
            row["at"] = _age(days)
            conn.execute(audit_table.insert().values(row))


def _rows(engine: sa.Engine) -> list[tuple[str, str | None, str, str | None]]:
    with engine.connect() as conn:
        q = sa.select(
            audit_table.c.operation,
            audit_table.c.resource_id,
            audit_table.c.actor_type,
            audit_table.c.detail,
        ).order_by(audit_table.c.pk)
        return [tuple(r) for r in conn.execute(q)]  # type: ignore[misc]


def _wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what}")
        time.sleep(0.05)


def _detail(text: str | None) -> dict[str, object]:
    assert text is not None
    return json.loads(text) if isinstance(text, str) else text


def test_a_server_keeps_the_days_it_is_told_to_keep(tmp_path: Path) -> None:
    """The audit log grew without bound unless someone ran ``scimd audit prune``. With
    SCIMD_AUDIT_RETENTION_DAYS a server removes older records at start (and hourly), and
    records that it did, as the system."""
    url = sqlite_url(tmp_path / "r.db")
    engine = create_engine(url)
    ensure_current(engine)
    _add(engine, [400, 31, 29, 1])
    env = {"SCIMD_AUDIT_RETENTION_DAYS": "30"}
    try:
        with start_server(url, log_dir=tmp_path, env=env) as server:
            _wait_for(lambda: len(_rows(engine)) == 3, "the prune")
            assert "older than 30 day(s) are deleted" in server.stderr_text()
        rows = _rows(engine)
    finally:
        engine.dispose()
    assert [r[1] for r in rows[:2]] == ["u29-2", "u1-3"]
    op, _, actor_type, detail = rows[2]
    assert (op, actor_type) == ("audit.prune", "system")
    assert _detail(detail)["removed"] == 2


def test_without_a_retention_nothing_is_removed(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "r.db")
    engine = create_engine(url)
    ensure_current(engine)
    _add(engine, [4000, 1])
    try:
        with start_server(url, log_dir=tmp_path):
            pass
        assert [r[1] for r in _rows(engine)] == ["u4000-0", "u1-1"]
    finally:
        engine.dispose()


def test_the_thread_prunes_again_and_adds_no_record_when_nothing_went(
    any_database_url: str,
) -> None:
    """Hourly prunes that find nothing would add a record an hour: they add none."""
    engine = create_engine(any_database_url)
    ensure_current(engine)
    _add(engine, [10, 1])
    retention = AuditRetention(engine, 5, interval=0.05, pause=0)
    retention.start()
    try:
        _wait_for(lambda: [r[1] for r in _rows(engine)][:1] == ["u1-1"], "the first prune")
        retention.days = 0.5  # type: ignore[assignment]  # as if a day went by
        _wait_for(lambda: _rows(engine)[0][0] == "audit.prune", "the second prune")
        time.sleep(0.3)  # a few more prunes, each finding nothing
    finally:
        retention.stop()
    rows = _rows(engine)
    engine.dispose()
    assert [r[0] for r in rows] == ["audit.prune", "audit.prune"]
    assert [_detail(r[3])["removed"] for r in rows] == [1, 1]


def test_a_prune_stopped_between_batches_records_what_went(any_database_url: str) -> None:
    """A server stopping ends its prune after the batch in progress (each is committed),
    and says how many went."""
    engine = create_engine(any_database_url)
    ensure_current(engine)
    _add(engine, [9, 8, 7])
    calls: list[int] = []

    def stop_after_two() -> bool:
        calls.append(1)
        return len(calls) == 2

    removed = audit.prune(engine, _age(5), audit.CLI, batch=1, between=stop_after_two)
    rows = _rows(engine)
    engine.dispose()
    assert removed == 2
    assert [r[1] for r in rows[:1]] == ["u7-2"]
    assert rows[1][0] == "audit.prune" and _detail(rows[1][3])["removed"] == 2


def test_a_negative_retention_is_refused() -> None:
    with pytest.raises(SettingsError, match="-1 is not a number of days"):
        load(audit_retention_days=-1)
    with pytest.raises(SettingsError, match="1000000 is not a number of days"):
        load(audit_retention_days=1000000)  # a date before year 1: the thread died on it
    assert load(audit_retention_days="30").audit_retention_days == 30
    assert load().audit_retention_days == 0  # an audit trail is kept until its owner says


def test_a_prune_with_nothing_to_remove_takes_no_write_lock(tmp_path: Path) -> None:
    """The batch was chosen by ``at``, which has no index: every hourly prune with nothing to
    remove read the whole table under SQLite's write lock (4 s at 5 million records, while
    writes waited). It now reads the oldest record only, and takes no lock: it finishes while
    another process holds the lock (a bound only to fail rather than hang)."""
    import sqlite3
    import threading

    url = sqlite_url(tmp_path / "r.db")
    engine = create_engine(url)
    ensure_current(engine)
    _add(engine, [3, 2, 1])
    holder = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    outcome: list[int] = []
    try:
        prune = threading.Thread(
            target=lambda: outcome.append(
                audit.prune(engine, _age(5), audit.CLI, record_empty=False)
            )
        )
        prune.start()
        prune.join(WAIT)
        assert outcome == [0]
    finally:
        holder.rollback()
        holder.close()
    assert len(_rows(engine)) == 3
    engine.dispose()


def test_a_record_out_of_time_order_neither_stops_a_prune_nor_goes_early(
    any_database_url: str,
) -> None:
    """Records written while a clock ran ahead sit among older ones: the first record in the
    future kept every prune from starting, and one young record among the first batch ended
    each prune after that batch (at most one batch an hour, against thousands of records a
    minute written)."""
    engine = create_engine(any_database_url)
    ensure_current(engine)
    _add(engine, [-30, 40, 40, 1, 40, 40, 40, 40, 1])  # -30: thirty days in the future
    removed = audit.prune(engine, _age(10), audit.CLI, batch=3, record_empty=False)
    rows = _rows(engine)
    engine.dispose()
    assert removed == 6
    assert [r[1] for r in rows[:3]] == ["u-30-0", "u1-3", "u1-8"]


def test_a_prune_stopped_by_another_process_lock_says_how_far_it_got(tmp_path: Path) -> None:
    """From a review: a prune whose later batch met another process's write lock reported
    "nothing was changed" (the command's exit status 5) after deleting the earlier batches,
    and left no audit record of them."""
    import sqlite3

    path = tmp_path / "prune.db"
    engine = create_engine(f"sqlite:///{path}", timeout=0.2)
    ensure_current(engine)
    with engine.begin() as conn:
        add_old_audit_records(conn, 6)
    holder = sqlite3.connect(path, isolation_level=None)

    def lock_after_the_first_batch() -> bool:
        holder.execute("BEGIN IMMEDIATE")
        return False

    try:
        with pytest.raises(audit.PruneStopped) as stopped:
            audit.prune(
                engine,
                "2021-01-01T00:00:00.000Z",
                audit.CLI,
                batch=2,
                between=lock_after_the_first_batch,
            )
    finally:
        holder.rollback()
    assert stopped.value.removed == 2 and stopped.value.status == 503
    assert "removed 2 audit record(s), then stopped" in stopped.value.detail
    with engine.connect() as conn:
        ops = conn.execute(sa.select(audit_table.c.operation).order_by(audit_table.c.pk)).all()
    holder.close()
    engine.dispose()
    assert len([op for (op,) in ops if op == "create"]) == 4
    assert ops[-1][0] != "audit.prune"  # the lock held, the stop could not be recorded either


def test_a_prune_whose_only_batch_fails_says_nothing_was_removed(tmp_path: Path) -> None:
    """From a review: a batch was counted before its commit. When its own record failed (a
    full disk, here a trigger refusing it), the prune said "removed 3 audit record(s), then
    stopped" and recorded a prune of 3, though the batch was rolled back and all 3 remained."""
    engine = create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    ensure_current(engine)
    with engine.begin() as conn:
        add_old_audit_records(conn, 3)
        conn.exec_driver_sql(
            "CREATE TRIGGER no_prune_record BEFORE INSERT ON audit"
            " WHEN NEW.operation = 'audit.prune' BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    with pytest.raises(Exception) as failed:
        audit.prune(engine, "2021-01-01T00:00:00.000Z", audit.CLI, batch=10)
    assert not isinstance(failed.value, audit.PruneStopped), failed.value
    with engine.connect() as conn:
        ops = [op for (op,) in conn.execute(sa.select(audit_table.c.operation))]
    engine.dispose()
    assert ops == ["create", "create", "create"]


def test_a_record_half_a_second_inside_the_window_survives_a_prune(any_database_url: str) -> None:
    """The cutoff is compared as text with ``at``, so it must be written as ``at`` is (with its
    milliseconds): "12:00:00Z" sorts after "12:00:00.500Z", and a record still inside the
    days to keep was removed."""
    now = datetime(2026, 1, 31, 12, 0, 0, tzinfo=UTC)
    before = audit.cutoff(30, now)
    assert before == "2026-01-01T12:00:00.000Z"
    engine = create_engine(any_database_url)
    ensure_current(engine)
    with engine.begin() as conn:
        for rid, at in (("old", "2026-01-01T11:59:59.500Z"), ("kept", "2026-01-01T12:00:00.500Z")):
            row = audit.values(audit.CLI, "user.create", "User", rid)
            row["at"] = at
            conn.execute(audit_table.insert().values(row))
    removed = audit.prune(engine, before, audit.CLI, record_empty=False)
    rows = _rows(engine)
    engine.dispose()
    assert removed == 1
    assert [r[1] for r in rows if r[0] == "user.create"] == ["kept"]
