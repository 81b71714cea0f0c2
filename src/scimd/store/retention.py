"""Audit retention: a server thread deletes the audit records older than a number of days.

The audit log keeps every change, about 8,000 records a minute under a busy sync, and
``scimd audit prune`` removes old ones only when someone remembers to run it. With
``audit_retention_days`` set, each server prunes at start and then hourly, in the batches of
``audit.prune``, pausing between them so that a busy server's writes take the lock in turn
(on SQLite its requests wait for a batch asynchronously, never on the event loop). Several
server processes on one database each prune: the deletes are idempotent.
"""

from __future__ import annotations

import logging
import threading

import sqlalchemy as sa

from scimd.store import audit

log = logging.getLogger("scimd.store")

SYSTEM = audit.Actor("system", None, "audit retention")
# Seconds between two prunes, and the pause between two batches of one.
INTERVAL = 3600.0
PAUSE = 0.05
STOP_WAIT = 5.0


class AuditRetention:
    """A daemon thread pruning the audit log of ``engine`` to the last ``days`` days; 0: off."""

    def __init__(
        self, engine: sa.Engine, days: int, *, interval: float = INTERVAL, pause: float = PAUSE
    ) -> None:
        self.engine = engine
        self.days = days
        self.interval = interval
        self.pause = pause
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.days <= 0 or self._thread is not None:
            return
        # A new event: a thread that outlived a stop's wait keeps its own, and stops.
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name="scimd-retention", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop after the batch in progress (a prune's batches are each committed), waiting
        for it a bounded time: another process holding SQLite's lock would keep it waiting
        up to the busy timeout. The thread is a daemon; an unfinished batch rolls back."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(STOP_WAIT)

    def prune(self, stop: threading.Event | None = None) -> int:
        """One prune now, ended early by ``stop``; returns how many records went."""
        stopping = stop or threading.Event()
        return audit.prune(
            self.engine,
            audit.cutoff(self.days),
            SYSTEM,
            between=lambda: stopping.wait(self.pause),
            record_empty=False,
        )

    def _run(self, stop: threading.Event) -> None:
        wait = 0.0
        while not stop.wait(wait):
            wait = self.interval
            try:
                removed = self.prune(stop)
            except sa.exc.SQLAlchemyError as e:  # e.g. the database is away: the next one
                log.warning("audit retention: the prune failed (%s); it runs again later", e)
                continue
            except Exception:  # never the end of the thread: the next prune may work
                log.exception("audit retention: the prune failed; it runs again later")
                continue
            if removed:
                log.info(
                    "audit retention: removed %d record(s) older than %d day(s)",
                    removed,
                    self.days,
                )
