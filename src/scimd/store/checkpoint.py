"""WAL checkpoints of a SQLite database in a background thread, off the request path.

In WAL mode every commit appends the pages it changed to the ``-wal`` file, and a checkpoint
copies them back into the database file (after an fsync of the log, then an fsync of the
database). SQLite runs that checkpoint inside the commit that takes the log past
``wal_autocheckpoint`` pages (1,000 by default). A 100-member group PATCH writes ~110 pages (one
per member in ``ix_members_member_id``), so every ~10th such request paid a checkpoint of the
others' pages: in-process, 100-member adds and removes averaged 2.1 ms with it, 1.3 ms without.

``Checkpointer`` runs ``PRAGMA wal_checkpoint(PASSIVE)`` on its own connection every
``interval`` seconds. A passive checkpoint blocks neither readers nor the writer, and the
sqlite3 module releases the GIL while it runs, so the copying and the fsyncs happen next to the
event loop. A page changed by several commits between two checkpoints is copied once.

The log stays bounded, and it must also start over from its beginning now and then: appending
to an ever longer ``-wal`` file made each commit ~20% slower than overwriting a recycled one
(measured). A passive checkpoint that runs while commits keep coming never catches up with the
end of the log, so SQLite cannot start it over by itself; request connections therefore keep an
automatic checkpoint at ``engine.WAL_AUTOCHECKPOINT_PAGES`` as a safety net. When the log
reaches that size the committing request checkpoints what is left (the background thread has
copied the rest) and the next write starts the log from the beginning. The log can outgrow that
size by what is written while a background checkpoint holds the checkpoint lock (the writer's
attempt then finds it busy and is repeated at its next commit). Without a checkpointer (the
command line, tests) the setting is simply SQLite's automatic checkpoint with a larger step.

``stop`` runs a final ``TRUNCATE`` checkpoint: after a clean shutdown the database file holds
everything and the log is empty.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from typing import Any

import sqlalchemy as sa

log = logging.getLogger("scimd.store")

# Seconds between two passive checkpoints while writes come. Each checkpoint's copying and
# fsyncs take the second core, which the event loop's own threads and (in the benchmark) the
# load generator also need. In paired runs over HTTP at 100,000 users, every 50 ms had POSTs at
# c=8 at 0.55-0.60x of bare in five runs, every 10 ms at 0.44-0.52x in six, and the other
# operations, group member adds included, alike (docs/performance.md); an in-process
# measurement of 100-member PATCHes, when the thread was added, had favoured 10 ms. A power
# loss can take the last interval's acknowledged writes (synchronous=NORMAL): 50 ms under load,
# 250 ms when idle.
DEFAULT_INTERVAL = 0.05
IDLE_INTERVAL = 0.25
FINAL_WAIT_MS = 2000


def applies(engine: sa.Engine) -> bool:
    """Whether ``engine`` is a SQLite database file (in WAL mode, as ``create_engine`` sets)."""
    database = engine.url.database
    return engine.dialect.name == "sqlite" and bool(database) and database != ":memory:"


class Checkpointer:
    """A daemon thread checkpointing the WAL of ``engine``'s SQLite database."""

    def __init__(self, engine: sa.Engine, interval: float = DEFAULT_INTERVAL) -> None:
        self.engine = engine
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None  # the pool's wrapper of our own sqlite3 connection
        self._limit = 0  # the writers' automatic checkpoint, in pages (0: none)

    def start(self) -> None:
        if self._thread is not None or not applies(self.engine):
            return
        self._conn = self.engine.raw_connection()
        self._conn.detach()  # its own connection: closed, not pooled, when stopped
        row = self._conn.dbapi_connection.execute("PRAGMA wal_autocheckpoint").fetchone()
        self._limit = int(row[0])
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="scimd-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, then checkpoint everything and truncate the log."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join()
        try:
            # Waits for other connections' transactions, but shutdown should not hang on them:
            # a log left behind is checkpointed by the next process that opens the database.
            self._conn.dbapi_connection.execute(f"PRAGMA busy_timeout={FINAL_WAIT_MS}")
            self._checkpoint("TRUNCATE")
        except sqlite3.Error:  # pragma: no cover - another process holds the database
            log.warning("final WAL checkpoint failed", exc_info=True)
        finally:
            self._conn.close()
            self._conn = None

    def _checkpoint(self, mode: str) -> tuple[int, int, int]:
        cur = self._conn.dbapi_connection.cursor()
        try:
            row = cur.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        finally:
            cur.close()
        busy, frames, copied = (int(x) for x in row)
        return busy, frames, copied

    def _run(self) -> None:
        last: tuple[int, int] | None = None
        wait = self.interval
        failing = False
        while not self._stop.wait(wait):
            try:
                _busy, frames, copied = self._checkpoint("PASSIVE")
            except sqlite3.Error as e:  # e.g. a disk error: retried, less and less often
                if not failing:  # one line per failure streak, not four a second
                    log.warning("WAL checkpoint failed (%s); retrying until it succeeds", e)
                failing, wait = True, min(max(wait, self.interval) * 2, IDLE_INTERVAL)
                continue
            if failing:
                log.warning("WAL checkpoint works again")
                failing = False
            # An idle database is looked at less and less often (up to IDLE_INTERVAL).
            idle = (frames, copied) == last and frames == copied
            wait = min(wait * 2, IDLE_INTERVAL) if idle else self.interval
            if frames >= self._limit > 0:
                # The writer is due to start the log over; its checkpoint needs the lock ours
                # takes, so leave it a clear window.
                wait = max(wait, 5 * self.interval)
            last = (frames, copied)
