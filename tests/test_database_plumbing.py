"""The database plumbing under the API, from a mutation audit: how errors are classified
(another process's lock, an outage) and logged, stored JSON and fetch errors of the prepared
statements, the event-loop runner's slots (timeouts, read-only sessions, shutdown), the
watch on the SQLite file, and the media type of errors the app answers itself."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from scimd.web import outage


class _PgError(Exception):
    """A driver error carrying a SQLSTATE, as psycopg's do."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def test_a_postgresql_lock_timeout_is_said_to_be_another_process_lock() -> None:
    """PostgreSQL's lock_timeout (SQLSTATE 55P03, set by the command line) is a lock held by
    another session: the client and the operator are told so, not "unavailable"."""
    from scimd.store.engine import is_busy

    error = sa.exc.OperationalError(
        "UPDATE", None, _PgError("canceling statement due to lock timeout", "55P03")
    )
    assert is_busy(error)
    assert "locked by another process" in outage.unavailable_detail(error)


def test_an_outage_log_line_between_tracebacks_gives_the_error_first_line(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the tracebacks (one every ten seconds), a request the database could not serve
    is logged in one line naming the driver's error: its first line, which says what failed."""
    monkeypatch.setattr(outage, "_last_traceback", [time.monotonic()])
    error = sa.exc.OperationalError(
        "SELECT 1",
        None,
        Exception("connection to server failed: Connection refused\n\tIs the server running?"),
    )
    with caplog.at_level(logging.ERROR, logger="scimd.web"):
        outage.database_unavailable(error, "GET /scim/v2/Users")
    [record] = caplog.records
    assert record.exc_info is None
    assert record.getMessage() == (
        "database unavailable on GET /scim/v2/Users: connection to server failed: Connection"
        " refused"
    )


def test_stored_json_keeps_a_whole_number_past_64_bits_exactly() -> None:
    """orjson refuses integers past 64 bits (a TypeError): stored JSON falls back to the
    standard encoder for them, and they read back exactly (they were a 500)."""
    from scimd.store.prepared import dump_json, load_json

    doc = {"n": 2**70, "m": -(2**65), "name": "Zoë"}
    assert load_json(dump_json(doc)) == doc


def test_a_sqlite_error_met_while_fetching_rows_comes_out_as_sqlalchemy_s(tmp_path: Path) -> None:
    """SQLite runs a statement row by row as it is fetched: an error met on a later row comes
    out of iterating the result as SQLAlchemy's error, as one met executing does (callers, the
    command line and the portal handle that kind)."""
    from scimd.store.engine import create_engine
    from scimd.store.prepared import Prepared

    engine = create_engine(f"sqlite:///{tmp_path / 'rows.db'}")
    try:
        stmt = Prepared(
            sa.text("SELECT json(v) FROM (SELECT '[1]' AS v UNION ALL SELECT '{')"),
            engine.dialect,
        )
        with engine.connect() as conn:
            rows = stmt.run(conn)  # the first row is fine: the error comes from the second
            with pytest.raises(sa.exc.DBAPIError, match="malformed JSON"):
                list(rows)
    finally:
        engine.dispose()


_BLOCKED = "UPDATE left_behind SET x = 2"


def _sessions(engine: sa.Engine, query: str, condition: str) -> int:
    """Other sessions running ``query`` whose activity meets ``condition``."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity"
                    f" WHERE query = :q AND pid <> pg_backend_pid() AND {condition}"
                ),
                {"q": query},
            ).scalar_one()
        )


def _sessions_running(engine: sa.Engine, query: str) -> int:
    return _sessions(engine, query, "state <> 'idle'")


def _waiting_for_lock(engine: sa.Engine, query: str) -> bool:
    return _sessions(engine, query, "wait_event_type = 'Lock'") > 0


async def _until(check: Callable[[], bool]) -> None:
    """Poll ``check`` (in a thread) until it holds; a bound only against a hang."""
    for _ in range(600):
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition never held")


def _blocked_update() -> None:
    """A runner call whose statement (autocommit, on the read connection) waits for a lock."""
    from scimd.store import onloop

    borrowed = onloop.BORROWED.get()
    assert borrowed is not None
    borrowed[0].exec_driver_sql(_BLOCKED)


def _left_behind(
    postgres_url: str, stop: Callable[[Any, asyncio.Future[Any]], Awaitable[None]]
) -> int:
    """Start a runner call that waits for a row lock another session holds, ``stop`` it (its
    runner closed, as at shutdown), free the lock, and return the row's value once
    no session runs the statement any more: 0 when the statement was cancelled in the
    database, 2 when it ran (and committed) after its call had ended."""
    from scimd.store.engine import create_engine
    from scimd.store.onloop import LoopRunner

    engine = create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE left_behind (x INTEGER)")
            conn.exec_driver_sql("INSERT INTO left_behind VALUES (0)")
        holder = engine.connect()
        holder.exec_driver_sql("UPDATE left_behind SET x = 1")  # holds the row lock, uncommitted

        async def scenario() -> None:
            runner = LoopRunner(postgres_url, 1)
            try:
                call = asyncio.ensure_future(runner.run(_blocked_update))
                await _until(lambda: _waiting_for_lock(engine, _BLOCKED))
                await stop(runner, call)
            finally:
                await asyncio.to_thread(holder.rollback)
                await runner.close()
                await asyncio.gather(call, return_exceptions=True)

        asyncio.run(scenario())
        holder.close()
        asyncio.run(_until(lambda: _sessions_running(engine, _BLOCKED) == 0))
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT x FROM left_behind").scalar_one())
    finally:
        engine.dispose()


def test_closing_the_runner_stops_a_statement_waiting_for_a_lock(postgres_url: str) -> None:
    """A call still running when the server shuts down is stopped in the database too, not
    committed once the process is gone."""

    async def close_runner(runner: Any, call: asyncio.Future[Any]) -> None:
        await runner.close()

    assert _left_behind(postgres_url, close_runner) == 0


def test_a_call_the_watchdog_cancels_is_a_database_timeout_and_its_slot_replaced(
    postgres_url: str,
) -> None:
    """A call past ``database_timeout`` whose statement the watchdog cancels (the server
    answers, the statement is just slow) fails as a timeout: the client is told that a change
    may have been saved, not that the database is unavailable. Its slot, given up, is replaced:
    the next call (with one slot) gets new connections instead of waiting for ever."""
    from scimd.store import onloop
    from scimd.store.onloop import DatabaseTimeout, LoopRunner

    def slow() -> None:
        borrowed = onloop.BORROWED.get()
        assert borrowed is not None
        borrowed[1].exec_driver_sql("SELECT pg_sleep(60)")

    def answer() -> int:
        borrowed = onloop.BORROWED.get()
        assert borrowed is not None
        return int(borrowed[0].exec_driver_sql("SELECT 42").scalar_one())

    async def scenario() -> tuple[BaseException | None, list[Any]]:
        runner = LoopRunner(postgres_url, 1, timeout=0.5)
        try:
            try:
                await runner.run(slow)
                error = None
            except Exception as e:
                error = e
            after = await asyncio.gather(
                *(runner.run(answer) for _ in range(3)), return_exceptions=True
            )
            return error, after
        finally:
            await runner.close()

    error, after = asyncio.run(scenario())
    assert isinstance(error, DatabaseTimeout), repr(error)
    assert "did not answer within 0.5 s" in outage.unavailable_detail(error)
    assert after == [42, 42, 42]


def test_a_slot_whose_write_was_refused_read_only_gets_new_connections(
    postgres_url: str,
) -> None:
    """A session keeps the read-only default it started with: a slot whose write was refused
    as read-only (SQLSTATE 25006) is replaced, so that writes work again once the database is
    writable, whatever the call did with the error."""
    from scimd.store import onloop
    from scimd.store.engine import is_read_only
    from scimd.store.onloop import LoopRunner

    def refused() -> None:
        borrowed = onloop.BORROWED.get()
        assert borrowed is not None
        write = borrowed[1]
        write.exec_driver_sql("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        write.commit()
        try:
            write.exec_driver_sql("CREATE TABLE left_behind_ro (x INTEGER)")
        finally:
            write.rollback()

    def writes() -> str:
        borrowed = onloop.BORROWED.get()
        assert borrowed is not None
        write = borrowed[1]
        try:
            return str(write.exec_driver_sql("SHOW transaction_read_only").scalar_one())
        finally:
            write.rollback()

    async def scenario() -> tuple[BaseException | None, str]:
        runner = LoopRunner(postgres_url, 1)
        try:
            try:
                await runner.run(refused)
                error = None
            except Exception as e:
                error = e
            return error, await runner.run(writes)
        finally:
            await runner.close()

    error, read_only = asyncio.run(scenario())
    assert error is not None and is_read_only(error), repr(error)
    assert read_only == "off"


def test_a_database_file_made_after_the_server_started_is_watched_too(tmp_path: Path) -> None:
    """On a first start the SQLite file does not exist yet when the directory is made: the
    file made then is the one watched, and its removal under the server refuses writes (they
    went into the deleted file, answered 201 and lost)."""
    from scimd.store import migrate
    from scimd.store.directory import Directory
    from scimd.store.engine import DatabaseFileGone, create_engine

    path = tmp_path / "first.db"
    engine = create_engine(f"sqlite:///{path}")
    directory = Directory(engine)
    try:
        migrate.ensure_current(engine)
        directory.check_file()  # the new file is adopted
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        with pytest.raises(DatabaseFileGone):
            directory.check_file()
    finally:
        directory.close()
        engine.dispose()


def test_errors_the_app_answers_itself_are_scim_json(tmp_path: Path) -> None:
    """The errors answered outside the SCIM routes (a Tenant URL without /scim/v2, a request
    refused before routing) are SCIM error documents, with SCIM's media type."""
    from support.api import serving

    with serving(f"sqlite:///{tmp_path / 'errors.db'}") as api:
        r = api.client.get("/Users", headers={"Authorization": f"Bearer {api.token}"})
        assert r.status_code == 404, r.text
        assert r.headers["content-type"] == "application/scim+json"
        assert r.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
