"""Group commit: SQLite writes that start in the same turn of the event loop commit together.

An identity provider sends its writes concurrently (Entra: several connections per tenant). On
SQLite each write used to be its own transaction, writing ~9 pages at COMMIT (the user row, its
indexes, the counters, the audit row and its index, the file header); most of those pages are
the same for writes made together. Here the first write of a turn opens a transaction and
schedules its COMMIT for the next turn; writes that start before then join it, each in its own
savepoint (a failing write undoes only its own changes). Every reply waits for the COMMIT, so a
2xx still means "committed", and reads use another connection, so nothing uncommitted is ever
returned.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

import sqlalchemy as sa

from scimd.scim.errors import ScimError
from scimd.store.directory import BatchLost, Directory
from scimd.store.engine import is_busy, is_unavailable
from scimd.web.outage import database_unavailable, unavailable_detail

log = logging.getLogger("scimd.web")
T = TypeVar("T")


class _LockWait:
    """One wait for SQLite's write lock, shared by the writes that queue behind it."""

    __slots__ = ("error", "over")

    def __init__(self) -> None:
        self.over = asyncio.Event()
        self.error: Exception | None = None


async def until_unlocked(attempt: Callable[[], Awaitable[T]], timeout: float) -> T:
    """``attempt()``, tried again after an asynchronous pause while it meets another process's
    SQLite write lock ("database is locked", made to fail at once), for up to ``timeout``
    seconds (``math.inf``: forever); then its error. The event loop never waits in SQLite's
    busy handler, where every request of the process waited with it."""
    deadline = asyncio.get_running_loop().time() + timeout
    pause = 0.001
    while True:
        try:
            return await attempt()
        except sa.exc.OperationalError as e:
            if not is_busy(e) or asyncio.get_running_loop().time() >= deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.05)


class GroupCommit:
    """One per event loop thread (the SQLite server's), used by every write it makes."""

    def __init__(self, directory: Directory, timeout: float = 30) -> None:
        self.directory = directory
        self.timeout = timeout if timeout > 0 else math.inf  # database_timeout; 0: forever
        self._tx: sa.RootTransaction | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._lock_wait: _LockWait | None = None  # while a write waits for the write lock

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (which writes through ``Directory.write``) and return once committed."""
        loop = asyncio.get_running_loop()
        while self._tx is None:
            wait = self._lock_wait
            if wait is not None:  # another write is waiting for the lock: its wait is ours
                await wait.over.wait()
                if wait.error is not None:  # it gave up: so do the writes that waited with it
                    raise sa.exc.OperationalError("BEGIN IMMEDIATE", None, wait.error)
                continue
            if self.directory.sqlite:
                await self._open(loop)
            else:
                self._tx = self.directory.begin_batch()
                loop.call_soon(self._commit)
        result = fn()  # raises after its savepoint was rolled back: nothing of it to commit
        done: asyncio.Future[None] = loop.create_future()
        self._waiters.append(done)
        await done
        return result

    async def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Take SQLite's write lock without stopping the event loop: while another process
        holds it (a second server on the file, a command, a backup), the loop went on
        waiting inside SQLite's busy handler, and every request of the process, reads and
        health checks included, waited with it (up to 30 s). Try, and pause asynchronously
        between tries, for as long as ``database_timeout``."""
        wait = self._lock_wait = _LockWait()

        async def begin() -> sa.RootTransaction:
            return self.directory.begin_batch(wait=False)

        try:
            try:
                self._tx = await until_unlocked(begin, self.timeout)
            except sa.exc.OperationalError as e:
                wait.error = e.orig if isinstance(e.orig, Exception) else e
                raise
        finally:
            # The writes that waited resume before the COMMIT below, and join this batch (or,
            # past the timeout, fail with it instead of each waiting the timeout again).
            self._lock_wait = None
            wait.over.set()
        loop.call_soon(self._commit)

    def _commit(self) -> None:
        tx, waiters = self._tx, self._waiters
        self._tx, self._waiters = None, []
        assert tx is not None
        try:
            self.directory.end_batch(tx)
        except Exception as e:
            if isinstance(e, BatchLost):  # the write that failed logged its own error
                if waiters:
                    log.warning("%d write(s) lost with a failed write of their batch", len(waiters))
            elif is_unavailable(e):  # a full disk: a traceback at most every ten seconds
                database_unavailable(e, f"a group commit of {len(waiters)} write(s)")
            else:
                log.exception("a group commit of %d writes failed", len(waiters))
            detail = (
                unavailable_detail(e)  # a full disk is said as such
                if is_unavailable(e) and not isinstance(e, BatchLost)
                else "the change could not be saved; retry the request"
            )
            err = ScimError(detail, status=503)
            for w in waiters:
                if not w.done():
                    w.set_exception(err)
            return
        for w in waiters:
            if not w.done():
                w.set_result(None)
