"""Writes as one conditional statement, for PostgreSQL: one round trip instead of five.

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

from scimd.scim.values import later_than, now_datetime
from scimd.store import audit as A
from scimd.store import modified, versions
from scimd.store.prepared import StatementCache, dump_json
from scimd.store.resources import (
    GROUPS,
    MEMBER_PROBE,
    PG_IDS,
    USERS,
    Kind,
    Rec,
    audit_delete,
    columns_of,
    new_id,
    touch_groups,
    uniqueness_error,
    unlink,
)
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
    actor: A.Actor,
    operation: str,
    rid: str,
    detail: dict[str, Any] | None,
    resource_type: str = USERS.name,
) -> dict[str, Any]:
    values = A.values(actor, operation, resource_type, rid, detail)
    return {f"a_{k}": v for k, v in values.items() if k != "resource_id"}


def _run(
    conn: sa.Connection, name: str, build: Any, params: dict[str, Any], kind: Any, doc: Any
) -> tuple[Any, ...] | None:
    """Run one conditional statement (its first row); a unique index it would break is the
    SCIM uniqueness error of ``kind``."""
    stmt = _STATEMENTS.get(conn, name, build)
    try:
        return stmt.run(conn, params).first()
    except IntegrityError:
        raise uniqueness_error(kind, doc) from None


def _counters(v: versions.Versions) -> dict[str, int]:
    return {"v_schema": v.schema, "v_auth": v.auth}


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
        **_counters(v),
        **_audit_params(actor, "create", rid, {USERS.unique_attr: doc.get(USERS.unique_attr)}),
    }
    made = _run(conn, "user.create", _create_statement, params, USERS, doc)
    return None if made is None else Rec(made[0], rid, now, now, 1, doc)


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
    now = later_than(row.last_modified)
    params = {
        "pk_": row.pk,
        "version_": row.version,
        "last_modified": now,
        "doc": dump_json(doc),
        **columns_of(USERS, doc),
        **_counters(v),
        **_audit_params(actor, operation, row.id, detail),
    }
    written = _run(conn, "user.replace", _replace_statement, params, USERS, doc)
    if written is None:
        return None
    return Rec(row.pk, row.id, row.created, now, written[0], doc, row.groups)


# The version counters still have the values the request was authorised with (raw SQL form
# of ``_versions_hold``, for the statements written as text).
_COUNTERS_HOLD = (
    "COALESCE(CAST((SELECT value FROM settings WHERE key = 'schema_version') AS INTEGER), 0)"
    " = :v_schema AND"
    " COALESCE(CAST((SELECT value FROM settings WHERE key = 'auth_version') AS INTEGER), 0)"
    " = :v_auth"
)

_GROUP_PATCH = """
WITH found_users AS (
    SELECT id FROM users WHERE id IN (SELECT {add_ids}) FOR SHARE
), found_groups AS (
    SELECT id FROM groups WHERE id IN (SELECT {add_ids})
), found AS (
    SELECT id, 'User' AS member_type FROM found_users
    UNION ALL SELECT id, 'Group' FROM found_groups
), target AS (
    SELECT pk FROM groups
    WHERE pk = :pk_ {if_version}
      AND {counters_hold}
      AND (SELECT count(*) FROM found) = :n_add
      AND NOT EXISTS (SELECT FROM found_groups)
    FOR {group_lock}
), added AS (
    INSERT INTO members (group_pk, member_id, member_type)
    SELECT :pk_, id, member_type FROM found WHERE EXISTS (SELECT FROM target)
    ORDER BY id  -- overlapping adds of two statements take their rows in one order
    ON CONFLICT DO NOTHING
    RETURNING member_id
), removed AS (
    DELETE FROM members
    WHERE ctid = ANY(ARRAY({remove_probe})) AND EXISTS (SELECT FROM target)
    RETURNING member_id
), changes AS (
    SELECT 1 AS n,
           json_build_object('op', 'remove', 'ids', json_agg(member_id ORDER BY member_id))
           AS change
    FROM removed HAVING count(*) > 0
    UNION ALL
    SELECT 2, json_build_object('op', 'add', 'ids', json_agg(member_id ORDER BY member_id))
    FROM added HAVING count(*) > 0
), upd AS (
    UPDATE groups SET {set_doc}
        -- Now, or a millisecond past the stored time if that is later (another write,
        -- after this one read the row, took the time of a clock ahead): never kept or back.
        last_modified = GREATEST(:last_modified, {next_ms}),
        version = version + 1
    WHERE pk = :pk_ AND EXISTS (SELECT FROM target) AND {changed}
    RETURNING id, version, last_modified
), logged AS (
    INSERT INTO audit (at, actor_type, actor, actor_name, operation, resource_type, resource_id,
                       detail, request_id)
    SELECT :a_at, :a_actor_type, :a_actor, :a_actor_name, :a_operation, :a_resource_type, upd.id,
           -- The record's detail (a JSON object, as text) with the members really changed:
           -- built as text (a round trip through jsonb made a 100-member remove slower).
           CAST(COALESCE((
               SELECT CASE WHEN COALESCE(:a_detail, '{{}}') = '{{}}' THEN '{{'
                           ELSE left(:a_detail, -1) || ',' END
                      || '"members":' || json_agg(change ORDER BY n) || '}}'
               FROM changes HAVING count(*) > 0
           ), :a_detail) AS JSON), :a_request_id
    FROM upd
)
SELECT (SELECT version FROM upd), (SELECT count(*) FROM found), EXISTS (SELECT FROM target),
       EXISTS (SELECT FROM found_groups), (SELECT last_modified FROM upd)
"""

# The group gets a new version (and an audit record) only if its document or its members
# changed: re-sent adds of members it has are no change (RFC 7644 §3.14). Counted over the
# changes themselves, so that all the member rows are written before the group's row is
# updated (``patch_group``). (``EXISTS`` stopped at the first change, a remove's: the adds
# ran after the update.)
_MEMBERS_CHANGED = "(SELECT count(*) FROM changes) > 0"


_GROUP_DOC = """display_name = :display_name,
        display_name_lower = :display_name_lower,
        external_id = :external_id,
        doc = CAST(:doc AS JSONB),"""


def patch_group(
    conn: sa.Connection,
    row: Rec,
    doc: dict[str, Any],
    adds: list[str],
    removes: list[str],
    actor: A.Actor,
    detail: dict[str, Any] | None,
    v: versions.Versions,
    *,
    exact: bool,
) -> Rec | None:
    """Member adds and removes (disjoint id lists) and, if ``doc`` differs from the row's, the
    group's new document, in one statement; None when what it depends on moved, ``row``
    itself when it changed nothing.

    It depends on the counters and, with ``exact`` (a new document, read from the row, or an
    ``If-Match``), on the group's version. Membership changes alone do not: they are set
    operations, right whatever happened to the group meanwhile, so concurrent member changes
    on one group (Entra's pattern) do not keep starting each other over. The members to add
    are locked against deletion while they are added (see ``resources.member_types``); when
    some do not exist nothing is written (``MissingMembers``).

    Member adds alone, or removes alone, lock the group's row ``FOR KEY SHARE`` (a delete of
    the group waits for them) until they update it, after their member rows: concurrent
    member changes of one group wait for each other only from that update to their commit.
    Locked ``FOR UPDATE`` from the start, each waited for the others' whole statements
    (member rows, audit record): with the audit record's members aggregated in SQL,
    100-member changes of one group on 8 connections ran at about half the rate
    (group_add_100 at c=8, 5,000 users: 215-285 against 404-421 req/s). Adds with removes
    still lock ``FOR UPDATE`` (see ``group_lock``).
    """
    adds = list(dict.fromkeys(adds))
    now = later_than(row.last_modified)
    new_doc = doc != row.doc
    params = {
        "pk_": row.pk,
        "last_modified": now,
        "add_ids": dump_json(sorted(adds)),
        "n_add": len(adds),
        "remove_ids": dump_json(sorted(set(removes))),
        **_counters(v),
        **_audit_params(actor, "patch", row.id, detail, GROUPS.name),
    }
    if new_doc:
        params |= {"doc": dump_json(doc), **columns_of(GROUPS, doc)}
    if exact or new_doc:
        params["version_"] = row.version
    statement = lambda: sa.text(  # noqa: E731 - built once per variant
        _GROUP_PATCH.format(
            set_doc=_GROUP_DOC if new_doc else "",
            if_version="AND version = :version_" if exact or new_doc else "",
            remove_probe=MEMBER_PROBE.replace(":ids", ":remove_ids").replace(":group_pk", ":pk_"),
            counters_hold=_COUNTERS_HOLD,
            add_ids=PG_IDS.format(":add_ids"),
            changed="TRUE" if new_doc else _MEMBERS_CHANGED,
            # A version to hold (``exact``) is held from the start: the update's re-check of
            # a row another statement changed meanwhile does not look at it again.
            # So do adds with removes: two such statements could take their member rows in
            # opposite orders and deadlock (a review: 103 retried deadlocks and 30 s waits
            # with 8 clients sending both at once).
            group_lock="UPDATE" if exact or new_doc or (adds and removes) else "KEY SHARE",
            next_ms=modified.PG_NEXT_MS.format(column="last_modified"),
        )
    )
    key = f"group.patch.{int(new_doc)}{int(exact or new_doc)}"
    result = _run(conn, key, statement, params, GROUPS, doc)
    assert result is not None
    version, found, held, nested, stored = result
    if version is None:
        if held:
            return row  # no change
        if nested:
            raise NestedMembers()
        if found < len(adds):
            raise MissingMembers()
        return None
    return Rec(row.pk, row.id, row.created, stored, version, doc if new_doc else row.doc)


class MissingMembers(Exception):
    """Some members to add do not exist (the caller names them in its error)."""


class NestedMembers(Exception):
    """Some members to add are groups: the write locks the groups it touches in ``pk``
    order, in a transaction (``Directory._lock_groups``), and writes nothing here. Locking a
    member group before its new parent, as this statement locks users, made writes of
    groups nested in each other deadlock (69 deadlocks in 1,800 random nested writes from
    12 threads, each retried)."""


_DELETE = """
WITH gone AS (
    DELETE FROM {table}
    WHERE pk = :pk_ AND version = :version_
      AND {counters_hold}
    RETURNING id
), counted AS (
    UPDATE counters SET value = value - 1
    WHERE name = :kind AND slot = :slot AND EXISTS (SELECT FROM gone)
)
SELECT count(*) FROM gone
"""


def delete(conn: sa.Connection, kind: Kind, row: Rec, actor: A.Actor, v: versions.Versions) -> bool:
    """Delete ``row`` with its memberships, count and audit it, if neither its version nor
    the counters moved since they were read (else False: read again and start over).

    One transaction of two statements, not one statement: a group PATCH adding this row as a
    member locks it (``FOR SHARE``) and inserts the membership; the DELETE waits for that lock,
    but its snapshot, taken before it waited, does not show the new membership, so removing
    memberships in the same statement missed it and left a deleted user in a group (a
    randomised concurrent test found it). ``unlink`` runs next, with a new snapshot.
    """
    params = {
        "pk_": row.pk,
        "version_": row.version,
        "kind": kind.name,
        "slot": random.randrange(COUNTER_SLOTS),
        **_counters(v),
    }
    build = lambda: sa.text(  # noqa: E731
        _DELETE.format(table=kind.table.name, counters_hold=_COUNTERS_HOLD)
    )
    _transaction(conn, "BEGIN")
    try:
        touched = touch_groups(conn, row.id)  # groups first, as group writers lock them
        done = _run(conn, f"{kind.name}.delete", build, params, kind, row.doc)
        gone = bool(done and done[0])
        if gone:
            # Audited after ``unlink``: the record names every group the row left.
            left = unlink(conn, kind, row, touched)
            audit_delete(conn, actor, kind, row, left)
    except BaseException:
        _transaction(conn, "ROLLBACK")
        raise
    # Not deleted (the row moved): the groups' new versions announce no change, so they go.
    _transaction(conn, "COMMIT" if gone else "ROLLBACK")
    return gone


def _transaction(conn: sa.Connection, command: str) -> None:
    """BEGIN/COMMIT/ROLLBACK on a connection in autocommit mode (the read connection)."""
    _STATEMENTS.get(conn, command, lambda: sa.text(command)).run(conn)
