"""SQLite's member -> groups index: ``member_groups``, read with its pending pairs, and the
thread that applies them.

Triggers on ``members`` put every membership added or removed in ``member_groups_pending``
(``tables.MEMBER_TRIGGERS``), in the writing transaction; ``member_groups`` is changed later,
many pairs at a time, in key order. So ``member_groups`` is exact for every pair that is not
pending, and a pending pair is a membership exactly when ``members`` has it: ``pairs_sql``
reads the two that way. A 100-member PATCH then writes the few pages of a small table instead
of ~100 random pages of a large index (migration 0007 has the figures), and a pair added and
removed again and again (a user moving in and out of a group) writes nothing more once it is
pending, and reaches ``member_groups`` once per apply at most.

Any process may apply pending pairs (each batch is one transaction); ``scimd serve`` does it in
the background with ``MemberIndexer``: everything once a second, and at once whenever more
than ``HIGH_WATER`` pairs are pending (so the pending table stays a few dozen pages even while
a sync adds members by the thousand). Pending pairs that nobody applies cost readers a probe
each, never a wrong answer. PostgreSQL has a plain index instead (``tables``).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import Any

import sqlalchemy as sa

log = logging.getLogger("scimd.store")

# Pending pairs applied per transaction (the write lock is held a few ms).
BATCH = 1000
# Seconds between two applies of everything pending.
INTERVAL = 1.0
# More pending pairs than this are applied at once, a batch at a time.
HIGH_WATER = 4000
# Seconds between two looks at the high-water mark, and between two batches.
POLL = 0.02


_IS_MEMBER = (
    "EXISTS (SELECT 1 FROM members AS m WHERE m.group_pk = {0}.group_pk"
    " AND m.member_id = {0}.member_id)"
)
# The two sides of a member's memberships, each joined to its groups (``{member}``: a condition
# on the member's id): the pairs of member_groups that are not pending, and the pending pairs
# that are memberships.
INDEXED_SQL = (
    "member_groups AS mg JOIN groups AS g ON g.pk = mg.group_pk"
    " WHERE mg.member_id {member} AND NOT EXISTS (SELECT 1 FROM member_groups_pending AS p"
    " WHERE p.member_id = mg.member_id AND p.group_pk = mg.group_pk)"
)
PENDING_SQL = (
    "member_groups_pending AS p JOIN groups AS g ON g.pk = p.group_pk"
    " WHERE p.member_id {member} AND " + _IS_MEMBER.format("p")
)


def pairs_sql(member: str) -> str:
    """The (member_id, group_pk) memberships of the members ``member_id {member}``: e.g.
    ``= :id``, ``IN (SELECT ...)``."""
    return (
        "SELECT mg.member_id, mg.group_pk FROM member_groups AS mg"
        f" WHERE mg.member_id {member} AND NOT EXISTS (SELECT 1 FROM member_groups_pending AS p"
        " WHERE p.member_id = mg.member_id AND p.group_pk = mg.group_pk)"
        " UNION ALL SELECT p.member_id, p.group_pk FROM member_groups_pending AS p"
        f" WHERE p.member_id {member} AND {_IS_MEMBER.format('p')}"
    )


# The last pair of the first ``limit`` pending pairs (key order): where one apply stops.
_LAST_OF_BATCH = (
    "SELECT member_id, group_pk FROM member_groups_pending"
    " ORDER BY member_id, group_pk LIMIT 1 OFFSET ?"
)


def _apply_statements(everything: bool) -> tuple[str, ...]:
    """The pending pairs up to a bound (or all of them) into or out of ``member_groups``, in
    key order so that neighbours share pages, then off the pending list (a range of its key)."""
    within = "1" if everything else "(p.member_id, p.group_pk) <= (:member_id, :group_pk)"
    pending = f"SELECT p.member_id, p.group_pk FROM member_groups_pending AS p WHERE {within}"
    return (
        "INSERT OR IGNORE INTO member_groups (member_id, group_pk)"
        f" {pending} AND {_IS_MEMBER.format('p')}",
        "DELETE FROM member_groups WHERE (member_id, group_pk) IN"
        f" ({pending} AND NOT {_IS_MEMBER.format('p')})",
        f"DELETE FROM member_groups_pending AS p WHERE {within}",
    )


_APPLY_ALL = _apply_statements(everything=True)
_APPLY_UP_TO = _apply_statements(everything=False)


def apply_batch(db: sqlite3.Connection, limit: int) -> int:
    """Apply up to ``limit`` pending pairs in ``db``'s current write transaction; how many."""
    last = db.execute(_LAST_OF_BATCH, (limit - 1,)).fetchone()
    if last is None:  # fewer than ``limit``: all of them
        statements, params = _APPLY_ALL, {}
    else:
        statements, params = _APPLY_UP_TO, {"member_id": last[0], "group_pk": last[1]}
    done = 0
    for sql in statements:
        done = db.execute(sql, params).rowcount  # the last one's: pairs off the pending list
    return max(done, 0)


def apply_pending(conn: sa.Connection, limit: int = BATCH) -> int:
    """``apply_batch`` in a SQLAlchemy connection's transaction (which must write)."""
    return apply_batch(conn.connection.driver_connection, limit)  # type: ignore[arg-type]


class MemberIndexer:
    """A daemon thread applying ``engine``'s pending pairs, one batch per transaction, with a
    pause between batches so that the server's writes get the lock in between."""

    def __init__(
        self,
        engine: sa.Engine,
        interval: float = INTERVAL,
        batch: int = BATCH,
        high_water: int = HIGH_WATER,
        poll: float = POLL,
    ) -> None:
        self.engine = engine
        self.interval, self.batch, self.high_water, self.poll = interval, batch, high_water, poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None  # the pool's wrapper of our own sqlite3 connection

    @staticmethod
    def applies(engine: sa.Engine) -> bool:
        database = engine.url.database
        return engine.dialect.name == "sqlite" and bool(database) and database != ":memory:"

    def start(self) -> None:
        if self._thread is not None or not self.applies(self.engine):
            return
        self._conn = self.engine.raw_connection()
        self._conn.detach()  # its own connection: closed, not pooled, when stopped
        db = self._conn.dbapi_connection
        db.execute("PRAGMA busy_timeout=0")  # a busy database is tried again later
        db.execute("PRAGMA temp_store=MEMORY")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="scimd-member-index", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join()
        self._conn.close()
        self._conn = None

    def _pending_over(self, n: int) -> bool:
        """Whether more than ``n`` pairs are pending (a read: no lock taken)."""
        db = self._conn.dbapi_connection
        sql = "SELECT 1 FROM member_groups_pending LIMIT 1 OFFSET ?"
        return db.execute(sql, (n,)).fetchone() is not None

    def apply_once(self) -> int:
        """One batch in one transaction; how many pairs it applied."""
        db = self._conn.dbapi_connection
        db.execute("BEGIN IMMEDIATE")
        try:
            done = apply_batch(db, self.batch)
            db.execute("COMMIT")
        except BaseException:
            # SQLite has rolled back by itself after some errors (a full disk): a ROLLBACK
            # then fails, and its error would hide the one that says what happened.
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return done

    def _run(self) -> None:
        last_all = time.monotonic()  # when the pending list was last emptied
        failing = False
        wait = self.poll
        while not self._stop.wait(wait):
            try:
                if not self._pending_over(0):  # idle: looked at four times a second
                    wait, last_all = self.interval / 4, time.monotonic()
                    continue
                wait = self.poll
                due = time.monotonic() - last_all >= self.interval
                if not (due or self._pending_over(self.high_water)):
                    continue
                if self.apply_once() < self.batch:
                    last_all = time.monotonic()
            except sqlite3.OperationalError as e:
                if "locked" in str(e) or "busy" in str(e):  # a writer holds the lock: soon
                    continue
                failing = self._failed(e, failing)
                continue
            except sqlite3.Error as e:
                failing = self._failed(e, failing)
                continue
            if failing:
                log.warning("applying pending memberships works again")
                failing = False

    def _failed(self, e: Exception, failing: bool) -> bool:
        """One line per failure streak (e.g. a full disk), then a pause."""
        if not failing:
            log.warning("applying pending memberships failed (%s); retrying", e)
        self._stop.wait(self.interval)
        return True
