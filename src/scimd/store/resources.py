"""Users and Groups repositories: one transaction per request, every write audited.

Documents are validated by ``scimd.scim`` before they get here; this module maps them onto the
tables, enforces uniqueness with the database's unique indexes, keeps group membership in its own
table with set-based statements, and renders rows back into SCIM resources.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from scimd.scim import patch as P
from scimd.scim import resource as R
from scimd.scim import schema as S
from scimd.scim.errors import InvalidValue, NotFound, PreconditionFailed, Uniqueness
from scimd.scim.filter import AttrPath, Filter
from scimd.scim.values import now_datetime
from scimd.store import audit as A
from scimd.store import sqlfilter
from scimd.store.tables import counters, groups, members, users


@dataclass(frozen=True, slots=True)
class Kind:
    """How one resource type maps onto its table."""

    name: str  # "User" | "Group"
    table: sa.Table
    unique_attr: str  # the attribute with server-wide case-insensitive uniqueness
    unique_col: str  # its lower-cased column


USERS = Kind("User", users, "userName", "user_name_lower")
GROUPS = Kind("Group", groups, "displayName", "display_name_lower")
KINDS = {"User": USERS, "Group": GROUPS}


def etag(version: int) -> str:
    return f'W/"{version}"'


def check_etag(if_match: str | None, version: int) -> None:
    """RFC 7644 §3.14: a write with ``If-Match`` that names another version fails with 412."""
    if not if_match:
        return
    tags = [t.strip() for t in if_match.split(",")]
    if "*" in tags:
        return
    mine = etag(version)
    if not any(t == mine or t == mine[2:] for t in tags):
        raise PreconditionFailed(
            f"the resource is at version {mine}, not {if_match}: fetch it again and retry"
        )


def _columns(kind: Kind, doc: dict[str, Any]) -> dict[str, Any]:
    if kind is USERS:
        name = doc["userName"]
        return {
            "user_name": name,
            "user_name_lower": name.lower(),
            "external_id": doc.get("externalId"),
            "active": doc.get("active"),
        }
    name = doc["displayName"]
    return {
        "display_name": name,
        "display_name_lower": name.lower(),
        "external_id": doc.get("externalId"),
    }


def _uniqueness(kind: Kind, doc: dict[str, Any]) -> Uniqueness:
    value = doc.get(kind.unique_attr)
    return Uniqueness(
        f"a {kind.name} with {kind.unique_attr} '{value}' already exists"
        f" ({kind.unique_attr} is unique, compared case-insensitively)"
    )


def _bump_counter(conn: sa.Connection, name: str, delta: int) -> None:
    conn.execute(
        counters.update().where(counters.c.name == name).values(value=counters.c.value + delta)
    )


class Repository:
    """Reads and writes of one resource kind; methods take an open connection/transaction."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.t = kind.table

    # -- rendering ----------------------------------------------------------------------------
    def render(
        self,
        row: Any,
        rt: S.ResourceType,
        base: str,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        doc = row.doc
        doc.pop("password", None)
        res: dict[str, Any] = {"schemas": R.schemas_of(rt, doc), "id": row.id}
        res.update(doc)
        if extra:
            res.update(extra)
        res["meta"] = {
            "resourceType": self.kind.name,
            "created": row.created,
            "lastModified": row.last_modified,
            "version": etag(row.version),
            "location": f"{base}{rt.endpoint}/{row.id}",
        }
        return res

    # -- reads --------------------------------------------------------------------------------
    def get_row(self, conn: sa.Connection, rid: str) -> Any:
        row = conn.execute(sa.select(self.t).where(self.t.c.id == rid)).first()
        if row is None:
            raise NotFound(f"{self.kind.name} '{rid}' not found")
        return row

    def search(
        self,
        conn: sa.Connection,
        rt: S.ResourceType,
        flt: Filter | None,
        *,
        start: int,
        count: int,
        sort_by: AttrPath | None = None,
        descending: bool = False,
    ) -> tuple[int, list[Any]]:
        """One page of rows and the total; unfiltered totals come from a counter."""
        dialect = conn.dialect.name
        where = sqlfilter.compile_filter(flt, rt, self.t, dialect) if flt is not None else None
        q = sa.select(self.t)
        if where is not None:
            q = q.where(where)
        if sort_by is not None:
            q = q.order_by(*sqlfilter.sort_clauses(sort_by, rt, self.t, dialect, descending))
        else:
            q = q.order_by(self.t.c.pk)
        rows = list(conn.execute(q.limit(count).offset(start - 1))) if count > 0 else []
        if start == 1 and len(rows) < count:
            total = len(rows)  # the page holds every match: no count query needed
        elif where is None:
            total = conn.execute(
                sa.select(counters.c.value).where(counters.c.name == self.kind.name)
            ).scalar_one()
        else:
            total = conn.execute(
                sa.select(sa.func.count()).select_from(self.t).where(where)
            ).scalar_one()
        return int(total), rows

    # -- writes -------------------------------------------------------------------------------
    def create(
        self,
        conn: sa.Connection,
        doc: dict[str, Any],
        actor: A.Actor,
        member_items: Sequence[dict[str, Any]] = (),
    ) -> Any:
        now = now_datetime()
        rid = uuid.uuid4().hex
        values = {
            "id": rid,
            "created": now,
            "last_modified": now,
            "version": 1,
            "doc": doc,
            **_columns(self.kind, doc),
        }
        # A unique-index violation aborts the whole request (and its transaction): no savepoint.
        try:
            pk = conn.execute(self.t.insert().values(**values)).inserted_primary_key[0]
        except IntegrityError:
            raise _uniqueness(self.kind, doc) from None
        if member_items:
            add_members(conn, pk, member_items)
        _bump_counter(conn, self.kind.name, 1)
        A.record(
            conn,
            actor,
            "create",
            self.kind.name,
            rid,
            {self.kind.unique_attr: doc.get(self.kind.unique_attr)},
        )
        return self.get_row(conn, rid)

    def replace(
        self,
        conn: sa.Connection,
        row: Any,
        doc: dict[str, Any],
        actor: A.Actor,
        operation: str,
        detail: dict[str, Any] | None = None,
        member_ops: Sequence[P.MemberOp] = (),
    ) -> Any:
        """Write a new document for an existing row (PUT and PATCH both end here)."""
        values = {
            "doc": doc,
            "last_modified": now_datetime(),
            "version": self.t.c.version + 1,
            **_columns(self.kind, doc),
        }
        try:
            conn.execute(self.t.update().where(self.t.c.pk == row.pk).values(**values))
        except IntegrityError:
            raise _uniqueness(self.kind, doc) from None
        for op in member_ops:
            apply_member_op(conn, row.pk, op)
        A.record(conn, actor, operation, self.kind.name, row.id, detail)
        return self.get_row(conn, row.id)

    def touch(self, conn: sa.Connection, row: Any) -> None:
        """Bump version and lastModified without changing the document (membership changes)."""
        conn.execute(
            self.t.update()
            .where(self.t.c.pk == row.pk)
            .values(last_modified=now_datetime(), version=self.t.c.version + 1)
        )

    def delete(self, conn: sa.Connection, rid: str, actor: A.Actor, if_match: str | None) -> None:
        row = self.get_row(conn, rid)
        check_etag(if_match, row.version)
        conn.execute(self.t.delete().where(self.t.c.pk == row.pk))
        # A deleted user or group is no longer anybody's member.
        conn.execute(members.delete().where(members.c.member_id == rid))
        _bump_counter(conn, self.kind.name, -1)
        A.record(conn, actor, "delete", self.kind.name, rid, None)


# ---------------------------------------------------------------------------------------------
# Membership (set-based)


def _member_types(conn: sa.Connection, ids: Iterable[str]) -> dict[str, str]:
    """Map each existing id to "User" or "Group"; unknown ids are missing from the result."""
    ids = list(dict.fromkeys(ids))
    out: dict[str, str] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        for (rid,) in conn.execute(sa.select(users.c.id).where(users.c.id.in_(chunk))):
            out[rid] = "User"
        missing = [x for x in chunk if x not in out]
        if missing:
            for (rid,) in conn.execute(sa.select(groups.c.id).where(groups.c.id.in_(missing))):
                out[rid] = "Group"
    return out


def _resolve_members(conn: sa.Connection, items: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    ids = [i["value"] for i in items]
    types = _member_types(conn, ids)
    unknown = [x for x in dict.fromkeys(ids) if x not in types]
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise InvalidValue(f"members must be existing Users or Groups; unknown id(s): {shown}")
    return [{"group_pk": 0, "member_id": x, "member_type": types[x]} for x in dict.fromkeys(ids)]


def add_members(conn: sa.Connection, group_pk: int, items: Sequence[dict[str, Any]]) -> None:
    """Insert-if-absent: adding an existing member is a no-op (Entra re-sends adds)."""
    rows = _resolve_members(conn, items)
    for r in rows:
        r["group_pk"] = group_pk
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(members).on_conflict_do_nothing()
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(members).on_conflict_do_nothing()  # type: ignore[assignment]
    for i in range(0, len(rows), 500):
        conn.execute(stmt, rows[i : i + 500])


def remove_members(conn: sa.Connection, group_pk: int, ids: Sequence[str]) -> None:
    ids = list(dict.fromkeys(ids))
    for i in range(0, len(ids), 500):
        conn.execute(
            members.delete().where(
                members.c.group_pk == group_pk, members.c.member_id.in_(ids[i : i + 500])
            )
        )


def apply_member_op(conn: sa.Connection, group_pk: int, op: P.MemberOp) -> None:
    if op.kind == "add":
        add_members(conn, group_pk, op.members)
    elif op.kind == "remove":
        remove_members(conn, group_pk, [m["value"] for m in op.members])
    elif op.kind == "remove_all":
        conn.execute(members.delete().where(members.c.group_pk == group_pk))
    else:  # replace
        conn.execute(members.delete().where(members.c.group_pk == group_pk))
        add_members(conn, group_pk, op.members)


def load_members(conn: sa.Connection, group_pk: int) -> list[dict[str, Any]]:
    q = (
        sa.select(members.c.member_id, members.c.member_type)
        .where(members.c.group_pk == group_pk)
        .order_by(members.c.member_id)
    )
    return [{"value": mid, "type": mt} for mid, mt in conn.execute(q)]


def render_members(rows: list[dict[str, Any]], base: str) -> list[dict[str, Any]]:
    return [
        {
            "value": m["value"],
            "$ref": f"{base}/{'Users' if m['type'] == 'User' else 'Groups'}/{m['value']}",
            "type": m["type"],
        }
        for m in rows
    ]


def groups_of(
    conn: sa.Connection, user_ids: Sequence[str], base: str
) -> dict[str, list[dict[str, Any]]]:
    """User.groups, computed from the membership table (direct memberships)."""
    out: dict[str, list[dict[str, Any]]] = {}
    if not user_ids:
        return out
    q = (
        sa.select(members.c.member_id, groups.c.id, groups.c.display_name)
        .join(groups, groups.c.pk == members.c.group_pk)
        .where(members.c.member_id.in_(list(user_ids)))
        .order_by(groups.c.display_name_lower)
    )
    for uid, gid, name in conn.execute(q):
        out.setdefault(uid, []).append(
            {"value": gid, "$ref": f"{base}/Groups/{gid}", "display": name, "type": "direct"}
        )
    return out


LoadMembers = Callable[[], list[dict[str, Any]]]
