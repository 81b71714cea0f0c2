"""Group commit: SQLite writes that start in the same turn of the event loop commit together.

An identity provider sends its writes concurrently (Entra: several connections per tenant). On
SQLite each write used to be its own transaction, writing ~9 pages at COMMIT (the user row, its
indexes, the counters, the audit row and its index, the file header); most of those pages are
the same for writes made together. Here the first write of a turn opens a transaction and
schedules its COMMIT for the next turn; writes that start before then join it, each in its own
savepoint (a failing write undoes only its own changes). Every reply waits for the COMMIT, so a
2xx still means "durable", and reads use another connection, so nothing uncommitted is ever
returned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa

from scimd.scim.errors import ScimError
from scimd.store.directory import Directory

log = logging.getLogger("scimd.web")
T = TypeVar("T")


class GroupCommit:
    """One per event loop thread (the SQLite server's), used by every write it makes."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self._tx: sa.RootTransaction | None = None
        self._waiters: list[asyncio.Future[None]] = []

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (which writes through ``Directory.write``) and return once committed."""
        loop = asyncio.get_running_loop()
        if self._tx is None:
            self._tx = self.directory.begin_batch()
            loop.call_soon(self._commit)
        result = fn()  # raises after its savepoint was rolled back: nothing of it to commit
        done: asyncio.Future[None] = loop.create_future()
        self._waiters.append(done)
        await done
        return result

    def _commit(self) -> None:
        tx, waiters = self._tx, self._waiters
        self._tx, self._waiters = None, []
        assert tx is not None
        try:
            self.directory.end_batch(tx)
        except Exception:
            log.exception("a group commit of %d writes failed", len(waiters))
            err = ScimError("the change could not be saved; retry the request", status=503)
            for w in waiters:
                if not w.done():
                    w.set_exception(err)
            return
        for w in waiters:
            if not w.done():
                w.set_result(None)
