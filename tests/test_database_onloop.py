"""On PostgreSQL, a request waiting on the database does not hold up the others.

Directory calls run in greenlets on the event loop (``store.onloop``): while one request's
statement waits (here for a row lock another session holds), the server keeps answering.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from support.live_server import provisioned_server

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


async def _scenario(base: str, token: str, database_url: str) -> tuple[int, list[int], str]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as c:
        a = (await c.post("/Users", json={"userName": "held@x.com"})).json()["id"]
        b = (await c.post("/Users", json={"userName": "free@x.com"})).json()["id"]
        engine = sa.create_engine(database_url)
        try:
            with engine.connect() as holder:
                tx = holder.begin()
                holder.execute(sa.text("SELECT 1 FROM users WHERE id = :id FOR UPDATE"), {"id": a})
                body = {
                    "schemas": [PATCH],
                    "Operations": [{"op": "replace", "path": "displayName", "value": "Held"}],
                }
                waiting = asyncio.create_task(c.patch(f"/Users/{a}", json=body))
                await asyncio.sleep(0.5)  # the PATCH is now waiting for the row lock
                others = [
                    (await c.get(f"/Users/{b}")).status_code,
                    (await c.post("/Users", json={"userName": "meanwhile@x.com"})).status_code,
                    (
                        await c.get("/Users", params={"filter": 'userName eq "free@x.com"'})
                    ).status_code,
                ]
                still_waiting = not waiting.done()
                tx.commit()
            patched = await waiting
        finally:
            engine.dispose()
        assert still_waiting, "the PATCH should have been waiting for the lock"
        return patched.status_code, others, patched.json()["displayName"]


def test_a_waiting_request_does_not_block_others(postgres_url: str, tmp_path: Path) -> None:
    with provisioned_server(postgres_url, log_dir=tmp_path) as server:
        status, others, name = asyncio.run(_scenario(server.base_url, server.token, postgres_url))
    assert others == [200, 201, 200]
    assert (status, name) == (200, "Held")


def test_connections_start_without_jit(postgres_url: str) -> None:
    """Both engines open PostgreSQL connections with JIT compilation off (it cost ~7 ms per
    statement once stale statistics pushed estimates over jit_above_cost); options in the
    URL come after ours, so an operator can turn it back on."""
    from scimd.store.engine import create_engine
    from scimd.store.onloop import LoopRunner

    def show(url: str, setting: str) -> str:
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                return str(conn.exec_driver_sql(f"SHOW {setting}").scalar())
        finally:
            engine.dispose()

    async def show_async(url: str) -> str:
        runner = LoopRunner(url, 1)
        try:
            async with runner.engine.connect() as conn:
                return str((await conn.exec_driver_sql("SHOW jit")).scalar())
        finally:
            await runner.close()

    assert show(postgres_url, "jit") == "off"
    assert asyncio.run(show_async(postgres_url)) == "off"
    sep = "&" if "?" in postgres_url else "?"
    mine = f"{postgres_url}{sep}options=-c%20jit%3Don%20-c%20work_mem%3D7MB"
    assert (show(mine, "jit"), show(mine, "work_mem")) == ("on", "7MB")
    assert asyncio.run(show_async(mine)) == "on"


def test_opening_a_connection_is_bounded_unless_the_url_says_otherwise() -> None:
    """A silent server held a connect forever: the timeout becomes libpq's connect_timeout
    (at least its 2 s), and a URL's own connect_timeout wins."""
    from scimd.store.engine import postgres_connect_args

    url = "postgresql+psycopg://u@127.0.0.1:5432/d"
    assert postgres_connect_args(url, 30)["connect_timeout"] == 30
    assert postgres_connect_args(url, 0.5)["connect_timeout"] == 2
    assert "connect_timeout" not in postgres_connect_args(url, 0)
    assert "connect_timeout" not in postgres_connect_args(f"{url}?connect_timeout=9", 30)


def test_a_pause_in_a_runner_call_leaves_the_loop_running(postgres_url: str) -> None:
    """A write retried after a deadlock pauses first; in a runner's greenlet that pause must
    not stop the event loop (a time.sleep there would stop every request in progress)."""
    from scimd.store import onloop
    from scimd.store.onloop import LoopRunner

    async def scenario() -> tuple[int, int]:
        runner = LoopRunner(postgres_url, 1)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.ensure_future(tick())
        try:
            await runner.run(onloop.pause, 0.3)
            during = ticks
            onloop.pause(0.05)  # outside a runner call: a plain sleep, the loop stands still
            return during, ticks
        finally:
            ticker.cancel()
            await runner.close()

    during, after = asyncio.run(scenario())
    assert during >= 10 and after == during


def test_a_slot_keeps_its_greenlet_and_each_call_sees_its_own_context(postgres_url: str) -> None:
    """Calls reuse their slot's greenlet (a new one per call cost ~8 µs of the loop) and see
    the context variables of the task that made them, also after waiting in the middle."""
    import contextvars

    import greenlet
    from sqlalchemy.util.concurrency import await_

    from scimd.store.onloop import LoopRunner

    var: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")

    def whoami(pause: float) -> tuple[object, str, str]:
        before = var.get()
        await_(asyncio.sleep(pause))
        return greenlet.getcurrent(), before, var.get()

    async def scenario() -> list[tuple[object, str, str]]:
        runner = LoopRunner(postgres_url, 1)

        async def as_(name: str) -> tuple[object, str, str]:
            var.set(name)
            return await runner.run(whoami, 0.02)

        try:
            return list(await asyncio.gather(as_("a"), as_("b"), as_("c")))
        finally:
            await runner.close()

    results = asyncio.run(scenario())
    assert [(before, after) for _, before, after in results] == [("a", "a"), ("b", "b"), ("c", "c")]
    assert all(g is results[0][0] for g, _, _ in results)


def test_a_failed_or_cancelled_call_leaves_its_slot_usable(postgres_url: str) -> None:
    from sqlalchemy.util.concurrency import await_

    from scimd.store.onloop import LoopRunner

    def fails() -> None:
        await_(asyncio.sleep(0))
        raise LookupError("from the call")

    def forever() -> None:
        await_(asyncio.sleep(3600))

    async def scenario() -> tuple[str, bool, int]:
        runner = LoopRunner(postgres_url, 1)
        try:
            try:
                await runner.run(fails)
                raised = ""
            except LookupError as e:
                raised = str(e)
            waiting = asyncio.ensure_future(runner.run(forever))
            await asyncio.sleep(0.05)
            waiting.cancel()
            try:
                await waiting
                cancelled = False
            except asyncio.CancelledError:
                cancelled = True
            answer = await runner.run(lambda: 42)
            return raised, cancelled, answer
        finally:
            await runner.close()

    assert asyncio.run(scenario()) == ("from the call", True, 42)


def test_a_slot_on_a_descriptor_past_1023_is_not_taken_for_hung_up(postgres_url: str) -> None:
    """The idle-slot check reads its sockets with poll(): select() refuses descriptors past
    1023, and every slot of a process with that many open files was taken for one the
    database had ended, so each request opened two new connections."""
    import os
    import resource

    from scimd.store.onloop import LoopRunner

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]

    async def scenario() -> tuple[int, bool, bool]:
        runner = LoopRunner(postgres_url, 1)
        try:
            await runner.run(lambda: 1)
            slot = await runner._slot()
            fd = slot.read.sync_connection.connection.driver_connection.fileno()  # type: ignore[union-attr]
            hung = slot.hung_up()
            runner._slots.put_nowait(slot)  # type: ignore[union-attr]
            for _ in range(5):
                await runner.run(lambda: 1)
            again = await runner._slot()
            runner._slots.put_nowait(again)  # type: ignore[union-attr]
            return fd, hung, again is slot
        finally:
            await runner.close()

    try:
        fd, hung, kept = asyncio.run(scenario())
    finally:
        for h in held:
            os.close(h)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert fd > 1023 and not hung and kept  # the same slot served every call


def test_a_severed_thread_gets_new_connections_and_nothing_connects_on_the_caller(
    postgres_url: str,
) -> None:
    """The portal cuts a thread's connections when its query outlives the database timeout.
    The thread's idle connection, cut too, looked alive and failed its next statement on a
    healthy database; and cutting an invalidated connection made SQLAlchemy connect again on
    the calling thread (the event loop, held by a silent server for the connect timeout)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from scimd.store.directory import Directory
    from scimd.store.engine import create_engine

    engine = create_engine(postgres_url)
    d = Directory(engine)
    connects: list[str] = []
    sa.event.listen(engine, "connect", lambda *_: connects.append(threading.current_thread().name))
    pool = ThreadPoolExecutor(1, thread_name_prefix="portal")
    try:

        def both() -> int:
            with d.read() as r:
                r.execute(sa.text("SELECT 1"))
            with d.write() as w:
                w.execute(sa.text("SELECT 1"))
            return threading.get_ident()

        thread = pool.submit(both).result()

        def slow() -> None:
            with d.read() as r:
                r.execute(sa.text("SELECT pg_sleep(5)"))

        waiting = pool.submit(slow)
        time.sleep(0.5)
        before = list(connects)
        d.sever_thread(thread)
        with pytest.raises(sa.exc.OperationalError):
            waiting.result(timeout=30)
        d.sever_thread(thread)  # again, on connections now invalidated: no new connection
        assert connects == before

        def write_then_read() -> int:
            with d.write() as w:
                w.execute(sa.text("SELECT 1"))
            with d.read() as r:
                return int(r.execute(sa.text("SELECT 2")).scalar_one())

        assert pool.submit(write_then_read).result(timeout=30) == 2
        assert set(connects[len(before) :]) <= {t.name for t in threading.enumerate()} - {
            threading.main_thread().name
        }
    finally:
        pool.shutdown()
        d.close()
        engine.dispose()
