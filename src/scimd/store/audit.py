"""The audit log: one row per change, written in the same transaction as the change."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from scimd.scim.errors import ScimError
from scimd.scim.values import now_datetime
from scimd.store.engine import write_transaction
from scimd.store.prepared import StatementCache, dump_json
from scimd.store.tables import audit

log = logging.getLogger("scimd.store")

_STATEMENTS = StatementCache()


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change: an OAuth application (``app``), an admin, or the command line."""

    type: str  # "app" | "admin" | "cli" | "system"
    id: str | None = None
    name: str | None = None
    request_id: str | None = None


CLI = Actor("cli", None, "command line")


def record(
    conn: sa.Connection,
    actor: Actor,
    operation: str,
    resource_type: str,
    resource_id: str | None,
    detail: dict[str, Any] | None = None,
) -> None:
    row = values(actor, operation, resource_type, resource_id, detail)
    stmt = _STATEMENTS.get(
        conn, "audit.insert", lambda: audit.insert().values({k: sa.bindparam(k) for k in row})
    )
    stmt.run(conn, row)


def values(
    actor: Actor,
    operation: str,
    resource_type: str,
    resource_id: str | None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The audit row of a change, by column (statements that write it themselves use it)."""
    return {
        "at": now_datetime(),
        "actor_type": actor.type,
        "actor": actor.id,
        "actor_name": actor.name,
        "operation": operation,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "detail": dump_json(detail) if detail is not None else None,
        "request_id": actor.request_id,
    }


def history(
    conn: sa.Connection,
    *,
    resource_id: str | None = None,
    actor: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    q = sa.select(audit).order_by(audit.c.pk.desc()).limit(limit).offset(offset)
    if resource_id is not None:
        q = q.where(audit.c.resource_id == resource_id)
    if actor is not None:
        q = q.where(audit.c.actor == actor)
    return [dict(r._mapping) for r in conn.execute(q)]


PRUNE_BATCH = 5000


def cutoff(days: int, now: datetime | None = None) -> str:
    """The ``at`` before which records are more than ``days`` old (UTC, as ``at`` is written)."""
    when = (now or datetime.now(UTC)) - timedelta(days=days)
    return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def prune(
    engine: sa.Engine,
    before: str,
    actor: Actor,
    batch: int = PRUNE_BATCH,
    *,
    between: Callable[[], bool] | None = None,
    record_empty: bool = True,
) -> int:
    """Delete the records made before ``before`` (a ``meta`` dateTime, UTC), oldest first, in
    transactions of ``batch`` rows, so that SCIM writes wait for one short batch at most and
    not for the whole table. Records the prune itself (unless it removed nothing and
    ``record_empty`` is false: an hourly prune would otherwise add a record an hour).
    ``between`` runs between two batches; it returns True to stop early (a server stopping).
    Returns how many went.

    Records are written in about time order: each batch is the next ``batch`` rows by
    primary key, of which those made before ``before`` go, and the prune ends with a batch
    whose last record is to be kept. A record out of order (written while a clock ran ahead)
    neither stops a prune nor is removed early. ``at`` has no index (each would cost every
    change a second index write): selecting the batch by ``at`` read the whole table under
    SQLite's write lock on every prune with nothing to remove (4 s at 5 million records,
    while writes waited). A prune with nothing to remove reads the first batch's times
    only, and takes no lock."""
    if not _any_old(engine, before, batch):
        if record_empty:
            with write_transaction(engine) as conn:
                record(conn, actor, "audit.prune", "Audit", None, _pruned(before, 0))
        return 0
    page = (
        sa.select(audit.c.pk, audit.c.at)
        .where(audit.c.pk > sa.bindparam("last"))
        .order_by(audit.c.pk)
        .limit(batch)
    )
    old = audit.delete().where(
        audit.c.pk > sa.bindparam("last"),
        audit.c.pk <= sa.bindparam("upto"),
        audit.c.at < sa.bindparam("before"),
    )
    removed, last = 0, -1
    while True:
        try:
            with write_transaction(engine) as conn:
                rows = conn.execute(page, {"last": last}).all()
                done, went, upto = len(rows) < batch, 0, last
                if rows:
                    upto, newest = int(rows[-1][0]), str(rows[-1][1])
                    n = conn.execute(old, {"last": last, "upto": upto, "before": before})
                    went = int(n.rowcount or 0)
                    done = done or newest >= before
                if done and (removed + went or record_empty):
                    record(
                        conn, actor, "audit.prune", "Audit", None, _pruned(before, removed + went)
                    )
            # Counted once committed: a batch whose commit (or record) failed removed nothing.
            removed, last = removed + went, upto
        except Exception as e:
            if not removed:
                raise  # nothing was changed
            # Earlier batches are committed: said (the command said "nothing was changed"),
            # and recorded if the database lets it (the prune left no record at all).
            try:
                with write_transaction(engine) as conn:
                    record(conn, actor, "audit.prune", "Audit", None, _pruned(before, removed))
            except Exception:
                log.warning("a prune stopped after %d records could not be recorded", removed)
            raise PruneStopped(removed, e) from e
        if done:
            return removed
        if between is not None and between():  # after the commit: never holding the lock
            with write_transaction(engine) as conn:
                record(conn, actor, "audit.prune", "Audit", None, _pruned(before, removed))
            return removed


class PruneStopped(ScimError):
    """A prune that removed some records, then met an error (another process's lock)."""

    status = 503

    def __init__(self, removed: int, error: Exception) -> None:
        first = str(getattr(error, "orig", None) or error).strip().splitlines()
        super().__init__(
            f"removed {removed} audit record(s), then stopped ({first[0] if first else error}):"
            " run it again for the rest"
        )
        self.removed = removed


def _any_old(engine: sa.Engine, before: str, batch: int) -> bool:
    """Whether one of the first ``batch`` records was made before ``before`` (read outside
    any write: a prune with nothing to do takes no lock)."""
    first = sa.select(audit.c.at).order_by(audit.c.pk).limit(batch).subquery()
    with engine.connect() as conn:
        oldest = conn.execute(sa.select(sa.func.min(first.c.at))).scalar()
    return oldest is not None and str(oldest) < before


def _pruned(before: str, removed: int) -> dict[str, Any]:
    return {"before": before, "removed": removed}
