"""Directory calls on the event loop for a network database, through an async driver.

The directory's code is synchronous. On PostgreSQL it used to run in a pool of worker
threads: each request paid a hop to a thread and back and the threads' contention for the GIL
with the event loop, measured at about half the client CPU of a GET by id. Here it runs in a
greenlet on the event loop instead (the way SQLAlchemy's asyncio bridge does, with a greenlet
kept per slot): where a statement waits for the server, the greenlet hands the wait to the
loop, which serves other requests meanwhile.

Each call borrows a slot (a read connection in autocommit mode and a write connection) for
its duration; the directory uses the borrowed connections instead of its per-thread ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import select
import socket
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import greenlet
import orjson
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.util.concurrency import await_

from scimd.store.engine import is_read_only, json_text, postgres_connect_args
from scimd.store.prepared import Prepared

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

T = TypeVar("T")

log = logging.getLogger("scimd.store")


class DatabaseTimeout(sa.exc.OperationalError):
    """A call the database did not answer in time: its connections were closed under it."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            None, None, TimeoutError(f"the database did not answer within {seconds:g} s")
        )
        self.seconds = seconds


class _Done:
    """What a worker hands back when its call ends (anything else it hands back is an
    awaitable to wait for)."""

    __slots__ = ("error", "value")

    def __init__(self, value: Any, error: BaseException | None) -> None:
        self.value = value
        self.error = error


class Worker(greenlet.greenlet):  # type: ignore[misc]
    """A greenlet that runs one synchronous call after another, kept for its slot.

    SQLAlchemy's ``greenlet_spawn`` makes a new greenlet per call: ~8 µs of the event loop
    each, ~6% of a GET by id. A worker is made once and resumed per call (~1 µs). It waits
    the way SQLAlchemy's greenlets do (``await_`` hands an awaitable to the parent, which
    awaits it and switches back), so SQLAlchemy's async driver adapters work in it.
    """

    __sqlalchemy_greenlet_provider__ = True  # what ``await_`` checks it is called from

    def __init__(self) -> None:
        super().__init__(self._serve)
        self.idle = True

    def _serve(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        while True:
            try:
                done = _Done(fn(*args), None)
            except greenlet.GreenletExit:  # an abandoned worker being collected: end it
                raise
            except BaseException as e:  # handed to the caller, which raises it
                done = _Done(None, e)
            fn, args = self.parent.switch(done)

    async def call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        """Run ``fn(*args)`` in this greenlet, in the caller's context variables."""
        self.idle = False
        self.parent = greenlet.getcurrent()
        self.gr_context = self.parent.gr_context
        result = self.switch(fn, args)
        while type(result) is not _Done:
            try:
                value = await result
            except BaseException as e:  # the call decides what a failed wait means
                result = self.throw(e)
            else:
                result = self.switch(value)
        self.idle = True  # not reached when this coroutine is abandoned mid-call
        if result.error is not None:
            raise result.error
        return result.value  # type: ignore[no-any-return]


@dataclass(slots=True)
class Slot:
    read: AsyncConnection
    write: AsyncConnection
    worker: Worker = field(default_factory=Worker)
    started: float = 0.0  # when its running call started (monotonic seconds)
    severed: bool = False
    stopping: bool = False  # the watchdog is cancelling its statement, then severs it
    # A write refused as read-only: the database's read-only default is taken when a session
    # starts, so the slot's connections stayed read-only after the database was writable.
    stale: bool = False

    def sever(self) -> None:
        """Shut the slot's sockets down, so that a call waiting on them fails at once.

        A database that is up but silent (a stopped or swapped-out server, a network path
        that drops packets without a reset) never answers, and the call would wait forever
        with its request. Closing the descriptor under the driver is unsafe (it may be
        reused); a shutdown makes the pending read see the end of the stream, which the
        driver reports as a lost connection.
        """
        self.severed = True
        for driver in self._drivers():
            if driver is not None:
                sever(driver)

    async def cancel(self) -> None:
        """Ask the server to cancel the statements running on the slot's connections (a new
        connection carries the request): one waiting for a lock would otherwise run when the
        lock frees, and commit, after its request was answered 503 or its process had
        exited. Nothing running: nothing happens."""
        await asyncio.gather(*(_cancel(d) for d in self._drivers() if d is not None))

    def _drivers(self) -> list[Any]:
        return [
            None if c.sync_connection is None else driver_of(c.sync_connection)
            for c in (self.read, self.write)
        ]

    def connections(self) -> tuple[sa.Connection, sa.Connection]:
        return self.read.sync_connection, self.write.sync_connection  # type: ignore[return-value]

    def broken(self) -> bool:
        return any(d is None or bool(d.closed) for d in self._drivers())

    def hung_up(self) -> bool:
        """Whether the server ended a connection while the slot was idle. An idle connection
        has nothing to read: PostgreSQL sends a FATAL notice (restart, terminated backend,
        ``idle_session_timeout``) and closes it, which makes its socket readable. Checked
        before each use (one ``select``, about a microsecond): after a restart, each idle
        slot used to fail one request with a 503 before it was replaced."""
        poll = select.poll()  # not select(): it refuses descriptors past 1023
        for driver in self._drivers():
            try:
                fd = driver.fileno()
            except Exception:  # a closed connection has no socket (the driver says so its way)
                return True
            poll.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poll.poll(0))


async def _cancel(driver: Any) -> None:
    """Cancel what runs on ``driver``, waiting at most a second: a server that does not
    answer (stopped, unreachable) would hold the caller, and the watchdog, much longer."""
    with contextlib.suppress(Exception):  # closed already, or the server is gone
        await driver.cancel_safe(timeout=1.0)


def driver_of(conn: sa.Connection) -> Any | None:
    """The driver connection under ``conn``; None when it has none (closed, invalidated).
    Never ``conn.connection``: on an invalidated connection it connects again, on the
    calling thread (the event loop, which a silent server then held)."""
    if conn.closed or conn.invalidated:
        return None
    fairy = getattr(conn, "_dbapi_connection", None)
    return None if fairy is None else fairy.driver_connection


def sever(driver: Any) -> None:
    """Shut down a driver connection's socket (see ``Slot.sever``); closed already: nothing."""
    try:
        fd = driver.fileno()
        with socket.socket(fileno=os.dup(fd)) as s:
            s.shutdown(socket.SHUT_RDWR)
    except Exception:  # already closed: nothing waits on it
        return


# The connections of the call running in the current greenlet (see ``Directory``).
BORROWED: ContextVar[tuple[sa.Connection, sa.Connection] | None] = ContextVar(
    "scimd_borrowed", default=None
)
# The read batch of the runner whose greenlet this is (see ``batch_for``).
_BATCH: ContextVar[ReadBatch | None] = ContextVar("scimd_read_batch", default=None)


def pause(seconds: float) -> None:
    """Wait without stopping the event loop when called from a runner's greenlet (a
    ``time.sleep`` there would stop every request); sleep in a worker thread."""
    if BORROWED.get() is not None:
        await_(asyncio.sleep(seconds))
    else:
        time.sleep(seconds)


def batch_for(conn: sa.Connection) -> ReadBatch | None:
    """The read batch ``conn``'s lookups may join: only a runner's borrowed read connection."""
    borrowed = BORROWED.get()
    if borrowed is None or borrowed[0] is not conn:
        return None
    return _BATCH.get()


class ReadBatch:
    """Lookups by key started in one step of the event loop, answered by one statement.

    Each lookup a request makes on PostgreSQL costs a round trip: ~40 µs of client CPU, a
    wake-up of a server process, and its own turn of the loop to read the reply. Lookups of
    one statement that start in the same step (concurrent requests reach them in the same
    step, as each runs until its first wait) instead wait together for one execution of a
    statement taking every key at once, on the connection of the first of them (idle while
    its owner waits). The statement takes a JSON array ``keys`` and returns rows whose first
    column is their key; a key without a row gets None.

    Measured over HTTP (3,000 users, alternating runs, 8 connections): GET by id 5,640-5,900
    -> 7,200-8,040 req/s, filter by userName 5,070-5,160 -> 6,370-7,120, at c=8 and c=32.
    """

    def __init__(self) -> None:
        self._open: dict[Prepared, _Lookups] = {}
        self._running: set[asyncio.Task[None]] = set()  # the loop keeps only weak references
        self.lookups = 0  # keys asked for, and statements that answered them
        self.statements = 0

    def fetch(self, conn: sa.Connection, stmt: Prepared, key: str) -> tuple[Any, ...] | None:
        """The row of ``key`` (without the key column), or None. Runs in a runner's greenlet;
        a statement error comes out as SQLAlchemy's, in every lookup that waited for it."""
        lookups = self._open.get(stmt)
        if lookups is None:
            loop = asyncio.get_running_loop()
            lookups = self._open[stmt] = _Lookups(conn, loop)
            task = loop.create_task(self._run(stmt, lookups))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        fut = lookups.loop.create_future()
        lookups.waiting.append((key, fut))
        self.lookups += 1
        try:
            return await_(fut)  # type: ignore[no-any-return]
        except conn.dialect.loaded_dbapi.Error as e:
            raise DBAPIError.instance(stmt.sql, None, e, conn.dialect.loaded_dbapi.Error) from e

    async def _run(self, stmt: Prepared, lookups: _Lookups) -> None:
        # The task's first step runs after the requests already scheduled in this step.
        if self._open.get(stmt) is lookups:
            del self._open[stmt]
        keys = list(dict.fromkeys(k for k, _ in lookups.waiting))
        self.statements += 1
        driver = lookups.conn.connection.dbapi_connection.driver_connection  # type: ignore[union-attr]
        try:
            async with driver.cursor() as cur:
                await cur.execute(stmt.sql, stmt.args({"keys": orjson.dumps(keys).decode()}))
                found = {row[0]: tuple(row[1:]) for row in await cur.fetchall()}
        except BaseException as e:
            for _, fut in lookups.waiting:
                if not fut.done():
                    fut.set_exception(e)
            if not isinstance(e, Exception):
                raise
            return
        for key, fut in lookups.waiting:
            if not fut.done():
                fut.set_result(found.get(key))


@dataclass(slots=True)
class _Lookups:
    conn: sa.Connection
    loop: asyncio.AbstractEventLoop
    waiting: list[tuple[str, asyncio.Future[Any]]] = field(default_factory=list)


class LoopRunner:
    """Runs synchronous directory calls in greenlets on the loop, ``size`` at a time."""

    def __init__(self, url: str, size: int, timeout: float = 0) -> None:
        # Imported here: it loads SQLAlchemy's ORM (~55 ms), which SQLite's servers never use.
        from sqlalchemy.ext.asyncio import create_async_engine

        self.engine: AsyncEngine = create_async_engine(
            url,
            json_serializer=json_text,
            json_deserializer=orjson.loads,
            pool_size=2 * size,
            max_overflow=0,
            pool_recycle=3600,
            connect_args=postgres_connect_args(url, timeout),
        )
        self.size = size
        self.timeout = timeout  # seconds a call may wait for the database; 0: no limit
        self.batch = ReadBatch()
        # Idle slots, and None for each discarded one: a waiter that gets it opens a new one.
        self._slots: asyncio.Queue[Slot | None] | None = None
        self._made = 0
        self._busy: dict[int, Slot] = {}
        self._watchdog: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()  # slots being given up on

    async def _slot(self) -> Slot:
        if self._slots is None:
            self._slots = asyncio.Queue()
            if self.timeout > 0:
                # In a context of its own: made from a request's, its log lines named that
                # request (the first the server served).
                self._watchdog = asyncio.get_running_loop().create_task(
                    self._watch(), context=contextvars.Context()
                )
        while True:
            if self._slots.empty() and self._made < self.size:
                self._made += 1
                try:
                    return await self._open()
                except BaseException:
                    self._made -= 1
                    self._slots.put_nowait(None)  # the next waiter tries in its turn
                    raise
            slot = await self._slots.get()
            if slot is None:
                continue  # a discarded slot's place: open one (or take one freed meanwhile)
            if not slot.hung_up():
                return slot
            await self._discard(slot)  # and take (or open) another

    def _idle(self) -> Slot | None:
        """An idle slot ready for use, without waiting; None when a request must wait, or open
        a connection (a discarded slot's place, a connection the server ended)."""
        if self._slots is None or self._slots.empty():
            return None
        slot = self._slots.get_nowait()
        if slot is None or slot.hung_up():
            self._slots.put_nowait(slot)  # for ``_slot``, under the timeout
            return None
        return slot

    async def _open(self) -> Slot:
        read = await (await self.engine.connect()).execution_options(isolation_level="AUTOCOMMIT")
        try:
            write = await self.engine.connect()
        except BaseException:
            await read.close()  # not left open when the second connection fails
            raise
        return Slot(read, write)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        asked = time.monotonic()
        idle = self._idle() if self.timeout > 0 else None
        if idle is not None:
            slot = idle
        elif self.timeout > 0:
            # The wait for a slot counts: behind stuck calls a request waited for one, then
            # the whole timeout again for its own call (44 s for a 30 s timeout, measured).
            # Only when it must wait (or connect): wait_for's task and timer cost ~10% of a
            # POST's CPU.
            try:
                slot = await asyncio.wait_for(self._slot(), self.timeout)
            except TimeoutError:
                raise DatabaseTimeout(self.timeout) from None
        else:
            slot = await self._slot()
        assert self._slots is not None
        slot.started = asked
        self._busy[id(slot)] = slot
        try:
            return await slot.worker.call(_call, (slot, self.batch, fn, args))
        except Exception as e:
            if slot.severed or slot.stopping:  # the watchdog cancelled or severed it
                raise DatabaseTimeout(self.timeout) from e
            slot.stale = is_read_only(e)
            raise
        finally:
            del self._busy[id(slot)]
            # Left mid-call (its coroutine was closed, or its request cancelled by the
            # shutdown timeout): never resume it, nor reuse its connections, which a
            # statement (a read batch's) may still be using; a statement still running is
            # cancelled (waiting for a lock, it committed after the process had exited).
            if not slot.worker.idle and not slot.severed:
                await slot.cancel()
            if not slot.worker.idle or slot.severed or slot.stopping or slot.stale or slot.broken():
                await self._discard(slot)
            else:
                self._slots.put_nowait(slot)

    async def _watch(self) -> None:
        """Sever the slots whose call has waited longer than the timeout. One task checking
        every quarter of the timeout (at most every second) costs the calls nothing; a
        timer per call would cost each ~2 µs."""
        while True:
            await asyncio.sleep(min(1.0, self.timeout / 4))
            now = time.monotonic()
            for slot in list(self._busy.values()):
                if not slot.severed and not slot.stopping and now - slot.started > self.timeout:
                    log.error(
                        "a database call waited over %g s: its statement is cancelled, its"
                        " connections closed and its request answered 503",
                        self.timeout,
                    )
                    # Each in a task of its own: a silent server makes a cancel wait its
                    # full second, which held every other stuck call's 503 behind it.
                    slot.stopping = True
                    task = asyncio.get_running_loop().create_task(_give_up(slot))
                    self._stopping.add(task)
                    task.add_done_callback(self._stopping.discard)

    async def _discard(self, slot: Slot) -> None:
        self._made -= 1
        if self._slots is not None:
            self._slots.put_nowait(None)  # a waiter opens a new one in its place
        for conn in (slot.read, slot.write):
            try:
                if not conn.closed:
                    await conn.invalidate()
                    await conn.close()
            except Exception:  # pragma: no cover - a dead connection may fail to close
                pass

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        # Calls still running at shutdown (their requests cancelled by the shutdown timeout):
        # stopped in the database too, not committed once the process is gone.
        await asyncio.gather(*(_give_up(busy) for busy in list(self._busy.values())))
        if self._slots is not None:
            while not self._slots.empty():
                slot = self._slots.get_nowait()
                if slot is not None:
                    await slot.read.close()
                    await slot.write.close()
        await self.engine.dispose()


async def _give_up(slot: Slot) -> None:
    """Cancel the statement a slot runs, then shut its sockets (its call fails at once)."""
    await slot.cancel()
    slot.sever()


def _call(slot: Slot, batch: ReadBatch, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    token = BORROWED.set(slot.connections())
    batch_token = _BATCH.set(batch)
    try:
        return fn(*args)
    finally:
        _BATCH.reset(batch_token)
        BORROWED.reset(token)
