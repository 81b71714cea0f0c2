"""The audit log: one row per change, written in the same transaction as the change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from scimd.scim.values import now_datetime
from scimd.store.prepared import StatementCache, dump_json
from scimd.store.tables import audit

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
