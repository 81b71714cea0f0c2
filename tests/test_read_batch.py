"""PostgreSQL lookups of concurrent requests share one statement (``onloop.ReadBatch``).

Reads by id and Entra's ``userName eq`` probes that start in the same step of the event loop
wait together for one statement taking all their keys. Each request must still get exactly
its own row (or its own "not found"), with the version counters it authorises against, and a
failing statement must fail every request that waited for it, as SQLAlchemy's error.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from scimd.scim.errors import NotFound
from scimd.scim.filter import parse
from scimd.store import audit, migrate, onloop, versions
from scimd.store.directory import Directory
from scimd.store.engine import create_engine
from scimd.store.onloop import LoopRunner
from scimd.store.prepared import Prepared
from support.live_server import provisioned_server

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
BASE = "http://scim.test/scim/v2"
APP = audit.Actor("app", "client-1", "entra", "req-1")


@pytest.fixture
def setup(postgres_url: str) -> Iterator[tuple[Directory, LoopRunner, list[dict[str, Any]]]]:
    engine = create_engine(postgres_url)
    migrate.ensure_current(engine)
    d = Directory(engine)
    made = [
        d.create("User", {"schemas": [USER], "userName": f"Batch{i}@x.com"}, APP, BASE).resource
        for i in range(12)
    ]
    group = d.create(
        "Group", {"displayName": "Readers", "members": [{"value": made[0]["id"]}]}, APP, BASE
    )
    assert group.resource is not None
    runner = LoopRunner(postgres_url, 16)
    yield d, runner, [m for m in made if m is not None]
    d.close()
    engine.dispose()


async def _warm(runner: LoopRunner, n: int) -> None:
    """Open ``n`` slots, so that ``n`` calls then start in one step of the loop."""
    await asyncio.gather(*(runner.run(lambda: None) for _ in range(n)))


def _gate(seen: list[versions.Versions]) -> Any:
    def gate(conn: sa.Connection, v: versions.Versions) -> audit.Actor:
        seen.append(v)
        return APP

    return gate


def test_concurrent_gets_get_their_own_rows_from_shared_statements(
    setup: tuple[Directory, LoopRunner, list[dict[str, Any]]],
) -> None:
    d, runner, made = setup
    ids = [u["id"] for u in made] + ["no-such-id", made[3]["id"]]
    seen: list[versions.Versions] = []

    async def scenario() -> list[Any]:
        try:
            await _warm(runner, len(ids))
            calls = [
                runner.run(lambda rid=rid: d.get("User", rid, BASE, gate=_gate(seen)))
                for rid in ids
            ]
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await runner.close()

    results = asyncio.run(scenario())
    for rid, result in zip(ids, results, strict=True):
        if rid == "no-such-id":
            assert isinstance(result, NotFound), result
            continue
        assert not isinstance(result, BaseException), result
        res, tag = result
        assert res["id"] == rid
        assert res["userName"] == next(u["userName"] for u in made if u["id"] == rid)
        assert tag == res["meta"]["version"]
    # User.groups came with the batched row: only the first user is a member.
    groups = {r[0]["id"]: r[0].get("groups") for r in results if isinstance(r, tuple)}
    assert [g["display"] for g in groups[made[0]["id"]]] == ["Readers"]
    assert all(groups[u["id"]] is None for u in made[1:])
    # Every request authorised against the counters, read with its row.
    assert len(seen) == len(ids)
    with d.read() as conn:
        assert set(seen) == {versions.read(conn)}
    # Fourteen lookups started in one step: one statement answered them all.
    assert runner.batch.lookups == len(ids)
    assert runner.batch.statements == 1


def test_concurrent_username_probes_are_batched_case_insensitively(
    setup: tuple[Directory, LoopRunner, list[dict[str, Any]]],
) -> None:
    d, runner, _ = setup
    names = ["batch1@x.com", "BATCH2@X.COM", "nobody@x.com", "Batch5@x.com"]
    seen: list[versions.Versions] = []

    async def scenario() -> list[Any]:
        try:
            await _warm(runner, len(names))
            calls = [
                runner.run(
                    lambda n=n: d.search(
                        "User", parse(f'userName eq "{n}"'), BASE, gate=_gate(seen)
                    )
                )
                for n in names
            ]
            return await asyncio.gather(*calls)
        finally:
            await runner.close()

    listings = asyncio.run(scenario())
    found = [[r["userName"] for r in listing.resources] for listing in listings]
    assert found == [["Batch1@x.com"], ["Batch2@x.com"], [], ["Batch5@x.com"]]
    assert [listing.total for listing in listings] == [1, 1, 0, 1]
    assert len(seen) == len(names)
    assert runner.batch.lookups == len(names)
    assert runner.batch.statements == 1


def test_a_failing_batch_fails_every_request_in_it(postgres_url: str) -> None:
    """A statement error reaches each waiting request as SQLAlchemy's error, and the runner's
    connections work afterwards."""
    engine = create_engine(postgres_url)
    runner = LoopRunner(postgres_url, 4)
    stmt = Prepared(
        sa.text(
            "SELECT k.value, 100 / CAST(k.value AS INTEGER)"
            " FROM jsonb_array_elements_text(CAST(:keys AS JSONB)) AS k"
        ),
        engine.dialect,
    )

    def lookup(key: str) -> Any:
        borrowed = onloop.BORROWED.get()
        assert borrowed is not None
        batch = onloop.batch_for(borrowed[0])
        assert batch is not None
        return batch.fetch(borrowed[0], stmt, key)

    async def scenario() -> tuple[list[Any], list[Any]]:
        try:
            await _warm(runner, 3)
            failing = await asyncio.gather(
                *(runner.run(lookup, k) for k in ("5", "0", "20")), return_exceptions=True
            )
            fine = await asyncio.gather(*(runner.run(lookup, k) for k in ("5", "20", "50")))
            return failing, fine
        finally:
            await runner.close()

    failing, fine = asyncio.run(scenario())
    engine.dispose()
    assert all(isinstance(e, DBAPIError) for e in failing), failing
    assert all("division by zero" in str(e) for e in failing)
    assert fine == [(20,), (5,), (2,)]
    assert (runner.batch.lookups, runner.batch.statements) == (6, 2)


def test_reads_on_a_write_connection_are_not_batched(postgres_url: str) -> None:
    """Only a runner's read connection joins batches: a locking read in a write transaction
    must see its own transaction, not another connection's snapshot."""
    engine = create_engine(postgres_url)
    runner = LoopRunner(postgres_url, 2)

    def which() -> tuple[bool, bool]:
        borrowed = onloop.BORROWED.get()
        assert borrowed is not None
        read, write = borrowed
        return onloop.batch_for(read) is not None, onloop.batch_for(write) is not None

    async def scenario() -> tuple[bool, bool]:
        try:
            return await runner.run(which)
        finally:
            await runner.close()

    assert asyncio.run(scenario()) == (True, False)
    with engine.connect() as conn:
        assert onloop.batch_for(conn) is None  # outside a runner
    engine.dispose()


def test_metrics_count_lookups_and_the_statements_that_answered_them(
    postgres_url: str, tmp_path: Path
) -> None:
    """/metrics on PostgreSQL: how many lookups could share a statement, and how many
    statements answered them (fewer under concurrency)."""
    with provisioned_server(postgres_url, log_dir=tmp_path) as server:
        headers = {"Authorization": f"Bearer {server.token}"}

        async def scenario() -> None:
            async with httpx.AsyncClient(
                base_url=server.base_url, headers=headers, timeout=30
            ) as c:
                made = await c.post("/Users", json={"userName": "metered@x.com"})
                uid = made.json()["id"]
                # 16 kept-alive connections; then the server is paused while each sends a GET,
                # so that on resuming it reads all of them in one step of its loop. (Sent as
                # they come, a loaded machine answered 320 GETs with 320 statements.)
                warm = await asyncio.gather(*(c.get(f"/Users/{uid}") for _ in range(16)))
                assert {r.status_code for r in warm} == {200}
                for _ in range(4):
                    os.kill(server.process.process.pid, signal.SIGSTOP)
                    try:
                        sent = [asyncio.create_task(c.get(f"/Users/{uid}")) for _ in range(16)]
                        await asyncio.sleep(0.3)  # time for the requests to reach its sockets
                    finally:
                        os.kill(server.process.process.pid, signal.SIGCONT)
                    got = await asyncio.gather(*sent)
                    assert {r.status_code for r in got} == {200}

        asyncio.run(scenario())
        text = httpx.get(f"{server.root_url}/metrics").text
        values = {
            line.split()[0]: float(line.split()[1])
            for line in text.splitlines()
            if line.startswith("scimd_db_")
        }
        # The POST's own probe is not batched (a write); the 80 GETs are.
        assert values["scimd_db_lookups_total"] >= 80
        assert 1 <= values["scimd_db_lookup_statements_total"] < values["scimd_db_lookups_total"]
        assert values["scimd_db_write_retries_total"] == 0  # exported, and nothing lost a deadlock
