"""User writes as one conditional statement, for PostgreSQL: one round trip instead of five.

On a network database each statement costs a round trip, and a write in a transaction took
five or six (BEGIN, the authorisation's version counters with the row, the change, the resource
counter, the audit row, COMMIT). Here the request reads what it needs first (the counters and,
for a change, the row) outside a transaction, decides in Python, and then sends the whole
change as one statement that commits on its own and applies only if nothing it depended on
moved: the version counters (a revoked token, a changed custom property) and, for a change, the
row's version. When something moved the statement changes nothing and the caller starts over;
two writers of one user therefore never both start from the same version.

SQLite keeps the transactional path: its statements cost microseconds, not round trips, and
its writes already commit in groups.
"""

from __future__ import annotations

import random
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from scimd.scim.values import now_datetime
from scimd.store import audit as A
from scimd.store import versions
from scimd.store.prepared import StatementCache, dump_json
from scimd.store.resources import USERS, Rec, columns_of, new_id, uniqueness_error
from scimd.store.tables import COUNTER_SLOTS, audit, counters, settings, users

_STATEMENTS = StatementCache()
_B = sa.bindparam
_USER_COLUMNS = ("user_name", "user_name_lower", "external_id", "active")
_AUDIT_COLUMNS = (
    "at",
    "actor_type",
    "actor",
    "actor_name",
    "operation",
    "resource_type",
    "resource_id",
    "detail",
    "request_id",
)


def _unchanged(key: str, param: str) -> Any:
    """The counter ``key`` still has the value the request was authorised with."""
    value = sa.select(settings.c.value).where(settings.c.key == key).scalar_subquery()
    return sa.func.coalesce(sa.cast(value, sa.Integer), 0) == _B(param, type_=sa.Integer)


def _versions_hold() -> Any:
    return sa.and_(_unchanged(versions.SCHEMA, "v_schema"), _unchanged(versions.AUTH, "v_auth"))


def _audit_from(source: Any, resource_id: Any) -> Any:
    """The audit row, inserted once per row the change returned (none when it did nothing)."""
    cols = [
        sa.cast(_B(f"a_{c}", type_=audit.c[c].type), audit.c[c].type)
        if c != "resource_id"
        else resource_id
        for c in _AUDIT_COLUMNS
    ]
    return audit.insert().from_select(list(_AUDIT_COLUMNS), sa.select(*cols).select_from(source))


def _audit_params(
    actor: A.Actor, operation: str, rid: str, detail: dict[str, Any] | None
) -> dict[str, Any]:
    values = A.values(actor, operation, USERS.name, rid, detail)
    return {f"a_{k}": v for k, v in values.items() if k != "resource_id"}


def _create_statement() -> Any:
    cols = ["id", *_USER_COLUMNS, "created", "last_modified", "version", "doc"]
    # Typed casts: in a SELECT list an untyped parameter (a NULL ``active``) would be text.
    row = sa.select(
        *[sa.cast(_B(c, type_=users.c[c].type), users.c[c].type) for c in cols if c != "version"],
        sa.literal(1, sa.Integer),
    )
    ordered = [c for c in cols if c != "version"] + ["version"]
    ins = (
        users.insert()
        .from_select(ordered, row.where(_versions_hold()))
        .returning(users.c.pk, users.c.id)
        .cte("ins")
    )
    bump = (
        counters.update()
        .where(
            counters.c.name == USERS.name,
            counters.c.slot == _B("slot"),
            sa.exists(sa.select(ins.c.pk)),
        )
        .values(value=counters.c.value + 1)
        .cte("bump")
    )
    logged = _audit_from(ins, ins.c.id).cte("logged")
    return sa.select(ins.c.pk).add_cte(bump, logged)


def create_user(
    conn: sa.Connection, doc: dict[str, Any], actor: A.Actor, v: versions.Versions
) -> Rec | None:
    """Insert a user, count it and audit it, if the counters are still ``v`` (else None)."""
    now = now_datetime()
    rid = new_id()
    params = {
        "id": rid,
        "created": now,
        "last_modified": now,
        "doc": dump_json(doc),
        **columns_of(USERS, doc),
        "slot": random.randrange(COUNTER_SLOTS),
        "v_schema": v.schema,
        "v_auth": v.auth,
        **_audit_params(actor, "create", rid, {USERS.unique_attr: doc.get(USERS.unique_attr)}),
    }
    stmt = _STATEMENTS.get(conn, "user.create", _create_statement)
    try:
        pk = stmt.run(conn, params).scalar_one_or_none()
    except IntegrityError:
        raise uniqueness_error(USERS, doc) from None
    return None if pk is None else Rec(pk, rid, now, now, 1, doc)


def _replace_statement() -> Any:
    values = {c: _B(c, type_=users.c[c].type) for c in (*_USER_COLUMNS, "last_modified", "doc")}
    upd = (
        users.update()
        .where(users.c.pk == _B("pk_"), users.c.version == _B("version_"), _versions_hold())
        .values({**values, "version": users.c.version + 1})
        .returning(users.c.version, users.c.id)
        .cte("upd")
    )
    logged = _audit_from(upd, upd.c.id).cte("logged")
    return sa.select(upd.c.version).add_cte(logged)


def replace_user(
    conn: sa.Connection,
    row: Rec,
    doc: dict[str, Any],
    actor: A.Actor,
    operation: str,
    detail: dict[str, Any] | None,
    v: versions.Versions,
) -> Rec | None:
    """Write ``doc`` over ``row`` and audit it, if neither the row's version nor the
    counters moved since they were read (else None: read again and start over)."""
    now = now_datetime()
    params = {
        "pk_": row.pk,
        "version_": row.version,
        "last_modified": now,
        "doc": dump_json(doc),
        **columns_of(USERS, doc),
        "v_schema": v.schema,
        "v_auth": v.auth,
        **_audit_params(actor, operation, row.id, detail),
    }
    stmt = _STATEMENTS.get(conn, "user.replace", _replace_statement)
    try:
        version = stmt.run(conn, params).scalar_one_or_none()
    except IntegrityError:
        raise uniqueness_error(USERS, doc) from None
    if version is None:
        return None
    return Rec(row.pk, row.id, row.created, now, version, doc, row.groups)
