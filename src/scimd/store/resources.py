"""Users and Groups repositories: one transaction per request, every write audited.

Documents are validated by ``scimd.scim`` before they get here; this module maps them onto the
tables, enforces uniqueness with the database's unique indexes, keeps group membership in its own
table with set-based statements, and renders rows back into SCIM resources.
"""

from __future__ import annotations

import os
import random
import threading
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError

from scimd.scim import patch as P
from scimd.scim import resource as R
from scimd.scim import schema as S
from scimd.scim.errors import (
    InvalidValue,
    NotFound,
    PreconditionFailed,
    Uniqueness,
    UnknownMembers,
    clipped,
)
from scimd.scim.filter import AttrPath, Compare, Filter
from scimd.scim.values import fold, later_than, now_datetime
from scimd.store import audit as A
from scimd.store import modified, onloop, sqlfilter, versions
from scimd.store.prepared import StatementCache, dump_json, load_json
from scimd.store.tables import COUNTER_SLOTS, counters, groups, members, users


@dataclass(frozen=True, slots=True)
class Kind:
    """How one resource type maps onto its table."""

    name: str  # "User" | "Group"
    table: sa.Table
    unique_attr: str  # the attribute with server-wide case-insensitive uniqueness
    unique_col: str  # its lower-cased column


USERS = Kind("User", users, "userName", "user_name_lower")
GROUPS = Kind("Group", groups, "displayName", "display_name_lower")


_last_id: list[int] = [0, 0, 0]  # ms, rand_a, rand_b of the previous id
_id_lock = threading.Lock()


def new_id() -> str:
    """A time-ordered random id (the layout of a UUIDv7, as 32 hex digits).

    Inserts into the id index then append instead of landing on a random page, which keeps
    each create to a few page writes, and unfiltered pages list in creation order. Within a
    process ids strictly increase (RFC 9562 §6.2, method 1: a tie in the same millisecond
    increments the counter bits).
    """
    ms = time.time_ns() // 1_000_000 & (2**48 - 1)
    with _id_lock:
        last_ms, last_a, last_b = _last_id
        if ms <= last_ms:
            ms, rand_a, rand_b = last_ms, last_a, last_b + 1
        else:
            rand = int.from_bytes(os.urandom(10), "big")
            rand_a, rand_b = rand >> 68 & 0xFFF, rand & (2**61 - 1)  # headroom for ties
        _last_id[:] = [ms, rand_a, rand_b]
    value = ms << 80 | 0x7 << 76 | rand_a << 64 | 0x2 << 62 | rand_b
    return f"{value:032x}"


def etag(version: int) -> str:
    return f'W/"{version}"'


def user_etag(version: int, groups: Sequence[tuple[str, str]]) -> str:
    """A user's tag: its version, and a digest of its groups when it has any.

    ``User.groups`` is part of a user's representation, so a membership change must change
    the tag: with the plain version, ``If-None-Match`` kept answering 304 over groups that
    had changed. A member change writes no user row (a 100-member PATCH would then rewrite
    100 users at random places), so the groups are folded in when the user is read."""
    if not groups:
        return etag(version)
    # CRC-32: a validator, not a secret; ~3 µs for 20 groups (a blake2b object cost more
    # than the rest together), which a page of 100 users pays 100 times.
    text = "\x00".join([f"{gid}\x00{name}" for gid, name in sorted(groups)])
    return f'W/"{version}.{zlib.crc32(text.encode("utf-8", "surrogatepass")):08x}"'


def row_tag(row: Rec) -> str:
    """A resource's ETag: a user's holds its groups when they were read with the row."""
    return etag(row.version) if row.groups is None else user_etag(row.version, row.groups)


def etag_listed(header: str, tag: str) -> bool:
    """Whether an ``If-Match``/``If-None-Match`` value lists ``tag`` or ``*``. Compared weakly
    (RFC 9110 §8.8.3.2): ``"3"`` names ``W/"3"``, as every tag here is weak."""
    opaque = tag.removeprefix("W/")
    return any(
        t == "*" or t.removeprefix("W/") == opaque for t in map(str.strip, header.split(","))
    )


def version_listed(header: str, version: int) -> bool:
    """Whether a write's ``If-Match``/``If-None-Match`` lists ``version`` or ``*``: a user's
    tag counts by its version alone. A write of a user cannot change its groups (they are
    read-only there), so a membership change since the client's read is no lost update."""
    want = str(version)
    for t in map(str.strip, header.split(",")):
        opaque = t.removeprefix("W/")
        if t == "*" or (
            len(opaque) > 1
            and opaque[0] == opaque[-1] == '"'
            and opaque[1:-1].split(".", 1)[0] == want
        ):
            return True
    return False


@dataclass(frozen=True, slots=True)
class Conditions:
    """The preconditions of a write (RFC 7644 §3.14, RFC 9110 §13.1): ``If-Match`` must list
    the resource's version, ``If-None-Match`` must not (``*``: must not exist, and it does)."""

    if_match: str | None = None
    if_none_match: str | None = None


def check_etag(cond: str | Conditions | None, row: Rec, own: bool = False) -> None:
    """A write whose preconditions fail changes nothing: 412. A string is an ``If-Match``.

    The current tag is ``row_tag(row)`` (a user's holds its groups when they were read with
    the row); ``own``: a user's, whose ``If-Match`` and ``If-None-Match`` also hold with any
    tag of its version (``version_listed``). (``If-None-Match`` compared whole tags only: with
    ``If-Match: W/"1"`` and ``If-None-Match: W/"1"`` a PATCH of a user in a group was applied,
    as the first held by version and the second, against ``W/"1.<digest>"``, did not.)"""
    if not cond:
        return
    if isinstance(cond, str):
        cond = Conditions(if_match=cond)
    if cond.if_match is not None and not cond.if_match.strip():
        raise PreconditionFailed(
            "the If-Match header is empty, and no version matches it: send the resource's ETag"
            " (its meta.version), or no If-Match for an unconditional write"
        )
    mine = row_tag(row)
    if cond.if_match and not (
        etag_listed(cond.if_match, mine) or (own and version_listed(cond.if_match, row.version))
    ):
        # A user read without its groups has a tag other than the one its GET gives
        # (W/"1" for W/"1.fad788a7"): its version number is said instead.
        now = row.version if own and row.groups is None else mine
        raise PreconditionFailed(
            f"the resource is at version {now}, not {cond.if_match}: fetch it again and retry"
        )
    if cond.if_none_match and (
        etag_listed(cond.if_none_match, mine)
        or (own and version_listed(cond.if_none_match, row.version))
    ):
        raise PreconditionFailed(
            f"If-None-Match: {cond.if_none_match} matches the resource (at version {mine}),"
            " so the request was not applied"
        )


@dataclass(slots=True)
class Rec:
    """A stored resource: its columns of record and the decoded document."""

    pk: int
    id: str
    created: str
    last_modified: str
    version: int
    doc: dict[str, Any]
    # A user's groups as (id, displayName) pairs when read with the row; None when not read.
    groups: list[tuple[str, str]] | None = None


# The longest value of an indexed attribute (userName, displayName of groups, externalId).
# A PostgreSQL B-tree entry holds at most 2,704 bytes; 512 characters of UTF-8 stay below it,
# and far above what identity providers send (Entra's UPNs: 113 characters).
MAX_INDEXED_CHARS = 512


def _indexed(attr: str, value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_INDEXED_CHARS:
        raise InvalidValue(
            f"'{attr}' is {len(value)} characters long; it is indexed, and an indexed"
            f" attribute holds at most {MAX_INDEXED_CHARS} characters"
        )
    return value


def columns_of(kind: Kind, doc: dict[str, Any]) -> dict[str, Any]:
    """The indexed columns of a validated document (400 for values too long to index)."""
    external_id = _indexed("externalId", doc.get("externalId"))
    if kind is USERS:
        name = _indexed("userName", doc["userName"])
        return {
            "user_name": name,
            "user_name_lower": fold(name),
            "external_id": external_id,
            "active": doc.get("active"),
        }
    name = _indexed("displayName", doc["displayName"])
    return {
        "display_name": name,
        "display_name_lower": fold(name),
        "external_id": external_id,
    }


def uniqueness_error(kind: Kind, doc: dict[str, Any]) -> Uniqueness:
    value = doc.get(kind.unique_attr)
    return Uniqueness(
        f"a {kind.name} with {kind.unique_attr} '{value}' already exists"
        f" ({kind.unique_attr} is unique, compared case-insensitively)"
    )


STATEMENTS = StatementCache()
_B = sa.bindparam


def _bump_counter(conn: sa.Connection, name: str, delta: int) -> None:
    stmt = STATEMENTS.get(
        conn,
        "counter.bump",
        lambda: (
            counters.update()
            .where(counters.c.name == _B("name"), counters.c.slot == _B("slot"))
            .values(value=counters.c.value + _B("delta"))
        ),
    )
    slot = random.randrange(COUNTER_SLOTS)
    stmt.run(conn, {"name": name, "slot": slot, "delta": delta})


def _locking(conn: sa.Connection) -> bool:
    """Whether a read-modify-write must lock its row.

    SQLite writers already run one at a time (``BEGIN IMMEDIATE``); on PostgreSQL two writers
    of one row would otherwise both start from the same version, and the second would undo
    the first's change (and pass an ``If-Match`` that is no longer true).
    """
    return conn.dialect.name != "sqlite"


def _locked(q: sa.Select[Any], table: sa.Table, lock: bool) -> sa.Select[Any]:
    return q.with_for_update(of=table) if lock else q


class Repository:
    """Reads and writes of one resource kind; methods take an open connection/transaction."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.t = t = kind.table
        self.cols = [t.c.pk, t.c.id, t.c.created, t.c.last_modified, t.c.version, t.c.doc]
        extra = (
            ["user_name", "user_name_lower", "external_id", "active"]
            if kind is USERS
            else ["display_name", "display_name_lower", "external_id"]
        )
        self.extra_cols = extra
        n = kind.name
        self._get = f"{n}.get"
        self._insert = f"{n}.insert"
        self._update = f"{n}.update"
        self._update_doc = f"{n}.update_doc"
        self._delete = f"{n}.delete"

    def _rec(self, row: Any) -> Rec:
        return Rec(row[0], row[1], row[2], row[3], row[4], load_json(row[5]))

    def _rec_groups(self, row: Any) -> Rec:
        pairs = load_json(row[6])
        if len(pairs) > 1:
            pairs.sort(key=lambda p: fold(p[1]))
        return Rec(row[0], row[1], row[2], row[3], row[4], load_json(row[5]), pairs)

    def _cols_groups(self, conn: sa.Connection) -> list[Any]:
        """The row's columns plus, for users, their groups in the same statement."""
        return [*self.cols, _groups_column(conn.dialect.name)]

    # -- rendering ----------------------------------------------------------------------------
    def render(
        self,
        row: Rec,
        rt: S.ResourceType,
        base: str,
        extra: dict[str, Any] | None = None,
        tag: str | None = None,
    ) -> dict[str, Any]:
        """The resource; ``tag``, its ETag when it is not the plain version (a user's)."""
        doc = row.doc
        res: dict[str, Any] = {"schemas": R.schemas_of(rt, doc), "id": row.id}
        res.update(doc)
        res.pop("password", None)
        for key in [k for k, v in res.items() if v == {} and k.startswith("urn:")]:
            del res[key]  # e.g. left empty when a custom property was removed
        if extra:
            res.update(extra)
        res["meta"] = {
            "resourceType": self.kind.name,
            "created": row.created,
            "lastModified": row.last_modified,
            "version": tag or etag(row.version),
            "location": f"{base}{rt.endpoint}/{row.id}",
        }
        return res

    # -- reads --------------------------------------------------------------------------------
    def get_row(
        self, conn: sa.Connection, rid: str, with_groups: bool = False, lock: bool = False
    ) -> Rec:
        """The row of ``rid``; ``with_groups`` (users only) reads User.groups along with it.

        ``lock`` (for a write that reads, changes and writes back the document) keeps other
        writers of the row waiting until this transaction ends; see ``_locking``.
        """
        cols = self._cols_groups(conn) if with_groups else self.cols
        locks = lock and _locking(conn)
        stmt = STATEMENTS.get(
            conn,
            f"{self._get}{'+groups' if with_groups else ''}{'+lock' if locks else ''}",
            lambda: _locked(sa.select(*cols).where(self.t.c.id == _B("id")), self.t, locks),
        )
        row = stmt.run(conn, {"id": rid}).first()
        rec = self._rec_groups if with_groups else self._rec
        if row is None:
            raise NotFound(f"{self.kind.name} '{clipped(rid)}' not found")
        return rec(row)

    def get_row_gated(
        self, conn: sa.Connection, rid: str, with_groups: bool, lock: bool = False
    ) -> tuple[Rec | None, versions.Versions]:
        """``get_row`` and the version counters in one statement (None when there is no row).

        The counters come back whether or not the row exists (an outer join on one constant
        row), so the caller can authorise the request before it says "not found". A locking
        read cannot outer-join (PostgreSQL refuses to lock the nullable side), so it reads the
        counters in the row's statement and, only when there is no row, in a second one.
        """
        if lock and _locking(conn):
            cols = self._cols_groups(conn) if with_groups else self.cols
            stmt = STATEMENTS.get(
                conn,
                f"{self._get}{'+groups' if with_groups else ''}+versions+lock",
                lambda: _locked(
                    sa.select(*versions.columns(), *cols).where(self.t.c.id == _B("id")),
                    self.t,
                    True,
                ),
            )
            locked = stmt.run(conn, {"id": rid}).first()
            if locked is None:
                return None, versions.read(conn)
            v = versions.Versions(int(locked[0] or 0), int(locked[1] or 0))
            return (self._rec_groups if with_groups else self._rec)(locked[2:]), v
        row = self._batched(conn, "id", rid, with_groups)
        if row is None:
            stmt = STATEMENTS.get(
                conn,
                f"{self._get}{'+groups' if with_groups else ''}+versions",
                lambda: self._gated(conn, self.t.c.id == _B("id"), with_groups),
            )
            row = stmt.run(conn, {"id": rid}).first()
        assert row is not None
        v = versions.Versions(int(row[0] or 0), int(row[1] or 0))
        if row[2] is None:
            return None, v
        return (self._rec_groups if with_groups else self._rec)(row[2:]), v

    def eq_rows(
        self,
        conn: sa.Connection,
        column: str,
        value: Any,
        limit: int,
        with_groups: bool,
        gated: bool = False,
    ) -> tuple[list[Rec], versions.Versions | None]:
        """Rows whose indexed ``column`` equals ``value`` (Entra's matching probes), in pk order.

        ``gated`` also returns the version counters, read in the same statement.
        """
        name = f"{self.kind.name}.eq.{column}{'+groups' if with_groups else ''}"

        def build() -> Any:
            cond = self.t.c[column] == _B("v")
            if gated:
                q = self._gated(conn, cond, with_groups)
            else:
                q = sa.select(*(self._cols_groups(conn) if with_groups else self.cols)).where(cond)
            if column not in (self.kind.unique_col, "id"):  # unique: one row, nothing to sort
                q = q.order_by(self.t.c.pk)
            return q.limit(_B("n"))

        rec = self._rec_groups if with_groups else self._rec
        if gated and column == self.kind.unique_col:
            row = self._batched(conn, column, value, with_groups)
            if row is not None:
                v = versions.Versions(int(row[0] or 0), int(row[1] or 0))
                return ([] if row[2] is None else [rec(row[2:])]), v
        stmt = STATEMENTS.get(conn, name + ("+versions" if gated else ""), build)
        found = list(stmt.run(conn, {"v": value, "n": limit}))
        if not gated:
            return [rec(r) for r in found], None
        v = versions.Versions(int(found[0][0] or 0), int(found[0][1] or 0))
        return [rec(r[2:]) for r in found if r[2] is not None], v

    def _batched(
        self, conn: sa.Connection, column: str, key: str, with_groups: bool
    ) -> tuple[Any, ...] | None:
        """The ``_gated`` row of the one row whose unique ``column`` is ``key``, read together
        with the same lookups of concurrent requests (``onloop.ReadBatch``); None where reads
        are not batched (SQLite, writes)."""
        batch = onloop.batch_for(conn)
        if batch is None or not _batchable(key):
            return None
        stmt = STATEMENTS.get(
            conn,
            f"{self.kind.name}.{column}{'+groups' if with_groups else ''}+versions+batch",
            lambda: self._gated_keys(conn, column, with_groups),
        )
        return batch.fetch(conn, stmt, key)

    def _gated_keys(self, conn: sa.Connection, column: str, with_groups: bool) -> sa.Select[Any]:
        """``_gated`` for each value of the JSON array ``keys`` of a unique ``column``: a row
        per key (the key first), also for keys that match nothing."""
        keys = sa.func.jsonb_array_elements_text(sa.cast(_B("keys"), JSONB))
        k = keys.table_valued("value").render_derived(name="k")
        cols = self._cols_groups(conn) if with_groups else self.cols
        return sa.select(k.c.value, *versions.columns(), *cols).select_from(
            k.outerjoin(self.t, self.t.c[column] == k.c.value)
        )

    def _gated(self, conn: sa.Connection, cond: Any, with_groups: bool) -> sa.Select[Any]:
        one = sa.select(sa.literal_column("1").label("one")).subquery("one")
        cols = self._cols_groups(conn) if with_groups else self.cols
        return sa.select(*versions.columns(), *cols).select_from(one.outerjoin(self.t, cond))

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
        with_groups: bool = False,
    ) -> tuple[int, list[Rec]]:
        """One page of rows and the total; unfiltered totals come from a counter.

        ``with_groups`` (users only) asks for User.groups in the same statement where the
        lookup is a prepared one; other rows come back without (``Rec.groups`` is None).
        """
        indexed = self.indexed_eq(flt) if sort_by is None and start == 1 else None
        if indexed is not None:
            # Entra's matching probes (userName/externalId/displayName eq): a prepared lookup.
            column, value = indexed
            rows, _ = self.eq_rows(conn, column, value, count + 1, with_groups)
            if len(rows) <= count:
                return len(rows), rows
        dialect = conn.dialect.name
        where = sqlfilter.compile_filter(flt, rt, self.t, dialect) if flt is not None else None
        if where is None and sort_by is None:
            rows, _, total = self.page_gated(conn, start, count, with_groups)
            return total, rows
        q = sa.select(*self.cols)
        if where is not None:
            q = q.where(where)
        if sort_by is not None:
            q = q.order_by(*sqlfilter.sort_clauses(sort_by, rt, self.t, dialect, descending))
        else:
            q = q.order_by(self.t.c.pk)
        rows = (
            [self._rec(r) for r in conn.execute(q.limit(count).offset(start - 1))]
            if count > 0
            else []
        )
        if start == 1 and len(rows) < count:
            return len(rows), rows  # the page holds every match: no count query needed
        return self.total(conn, where), rows

    def matching(self, conn: sa.Connection, rt: S.ResourceType, flt: Filter | None) -> int:
        """How many resources match ``flt`` (a bound filter; None for all)."""
        if flt is None:
            return self.total(conn, None)
        return self.total(conn, sqlfilter.compile_filter(flt, rt, self.t, conn.dialect.name))

    def total(self, conn: sa.Connection, where: Any) -> int:
        """How many rows match ``where`` (a compiled filter, None for all: the counter)."""
        if where is None:
            stmt = STATEMENTS.get(
                conn,
                "counter.get",
                lambda: sa.select(sa.func.sum(counters.c.value)).where(
                    counters.c.name == _B("name")
                ),
            )
            return int(stmt.run(conn, {"name": self.kind.name}).scalar_one())
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(self.t).where(where)).scalar_one()
        )

    def seek(
        self,
        conn: sa.Connection,
        rt: S.ResourceType,
        flt: Filter | None,
        *,
        after: tuple[Any, int] | None,
        count: int,
        sort_by: AttrPath | None = None,
        descending: bool = False,
    ) -> tuple[list[Rec], list[Any], bool, int]:
        """Up to ``count`` rows after the position ``after`` (sort value, pk) in the query's
        order (RFC 9865 cursors): a keyset condition, so a page costs the same at any depth.
        Returns the rows, their sort values, whether more follow and how many match."""
        dialect = conn.dialect.name
        where = sqlfilter.compile_filter(flt, rt, self.t, dialect) if flt is not None else None
        pk = self.t.c.pk
        key: Any = None
        q = sa.select(*self.cols)
        if sort_by is not None:
            key, nullable = sqlfilter.sort_key_nullable(sort_by, rt, self.t, dialect)
            q = q.add_columns(key.label("sort_key")).order_by(
                *sqlfilter.sort_clauses(sort_by, rt, self.t, dialect, descending)
            )
        else:
            q = q.order_by(pk)
        if where is not None:
            q = q.where(where)
        if after is not None:
            value, last = after
            if key is None:
                q = q.where(pk > last)
            else:
                q = q.where(_after(key, nullable, value, last, pk, descending))
        rows = conn.execute(q.limit(count + 1)).all() if count > 0 else []
        more = len(rows) > count
        rows = rows[:count]
        values = [r[-1] if key is not None else None for r in rows]
        return [self._rec(r) for r in rows], values, more, self.total(conn, where)

    def _page_ids(self) -> Any:
        """The ids of a page (``:n`` from offset ``:o``), in id order (ids are time-ordered, so
        creation order).

        The offset is walked on the compact id index only and the page's rows are fetched by
        id: skipping 50,000 whole rows of ~1 KB documents instead cost ~12x more (measured on
        SQLite at 100,000 users).
        """
        return (
            sa.select(self.t.c.id)
            .order_by(self.t.c.id)
            .limit(_B("n"))
            .offset(_B("o"))
            .scalar_subquery()
        )

    def page_gated(
        self, conn: sa.Connection, start: int, count: int, with_groups: bool
    ) -> tuple[list[Rec], versions.Versions, int]:
        """An unfiltered page, with the version counters and the total in the same statement.

        An unfiltered page (a client walking the whole list) was four statements on
        PostgreSQL (counters, page, its users' groups, total), each a round trip costing
        the client more CPU than its rows; here it is one. The rows are outer-joined to one
        constant row, so the counters and the total come back when the page is empty too.
        """
        name = f"{self.kind.name}.page{'+groups' if with_groups else ''}+versions"

        def build() -> Any:
            total = (
                sa.select(sa.func.sum(counters.c.value))
                .where(counters.c.name == _B("name"))
                .scalar_subquery()
                .label("total")
            )
            one = sa.select(sa.literal_column("1").label("one")).subquery("one")
            cols = self._cols_groups(conn) if with_groups else self.cols
            return (
                sa.select(*versions.columns(), total, *cols)
                .select_from(one.outerjoin(self.t, self.t.c.id.in_(self._page_ids())))
                .order_by(self.t.c.id)
            )

        stmt = STATEMENTS.get(conn, name, build)
        found = list(stmt.run(conn, {"n": count, "o": start - 1, "name": self.kind.name}))
        v = versions.Versions(int(found[0][0] or 0), int(found[0][1] or 0))
        rec = self._rec_groups if with_groups else self._rec
        rows = [rec(r[3:]) for r in found if r[3] is not None]
        if start == 1 and len(rows) < count:
            return rows, v, len(rows)  # the page holds every resource
        return rows, v, int(found[0][2] or 0)

    def indexed_eq(self, flt: Filter | None) -> tuple[str, Any] | None:
        """(column, value) when ``flt`` is one ``eq`` on a unique or indexed column."""
        if not isinstance(flt, Compare) or flt.op != "eq" or flt.path.schema or flt.path.sub:
            return None
        if not isinstance(flt.value, str):
            return None
        attr = flt.path.attr
        if attr == self.kind.unique_attr:
            return self.kind.unique_col, fold(flt.value)
        if attr == "externalId":
            return "external_id", flt.value
        if attr == "id":
            return "id", flt.value
        return None

    # -- writes -------------------------------------------------------------------------------
    def create(
        self,
        conn: sa.Connection,
        doc: dict[str, Any],
        actor: A.Actor,
        member_items: Sequence[dict[str, Any]] = (),
    ) -> Rec:
        now = now_datetime()
        rid = new_id()
        values = {
            "id": rid,
            "created": now,
            "last_modified": now,
            "version": 1,
            "doc": dump_json(doc),
            **columns_of(self.kind, doc),
        }
        stmt = STATEMENTS.get(
            conn,
            self._insert,
            lambda: self.t.insert().values({k: _B(k) for k in values}).returning(self.t.c.pk),
        )
        # A unique-index violation aborts the whole request (and its transaction): no savepoint.
        try:
            pk = stmt.run(conn, values).scalar_one()
        except IntegrityError:
            raise uniqueness_error(self.kind, doc) from None
        added = add_members(conn, pk, member_items) if member_items else []
        _bump_counter(conn, self.kind.name, 1)
        detail: dict[str, Any] = {self.kind.unique_attr: doc.get(self.kind.unique_attr)}
        if added:  # who was made a member, as a PATCH's record says
            detail["members"] = [{"op": "add", "ids": added}]
        A.record(conn, actor, "create", self.kind.name, rid, detail)
        return Rec(pk, rid, now, now, 1, doc)

    def replace(
        self,
        conn: sa.Connection,
        row: Rec,
        doc: dict[str, Any],
        actor: A.Actor,
        operation: str,
        detail: dict[str, Any] | None = None,
        member_ops: Sequence[P.MemberOp] = (),
    ) -> Rec:
        """Write a new document for an existing row (PUT and PATCH both end here).

        Member operations that change no membership (Entra re-sends adds) leave a group whose
        document is the same as it was: no new version, no audit record (RFC 7644 §3.14)."""
        done: list[MemberChange] = []
        if member_ops and doc == row.doc:
            done = [apply_member_op(conn, row.pk, op) for op in member_ops]
            if not any(done):
                return row
        now = later_than(row.last_modified)
        values: dict[str, Any] = {"doc": dump_json(doc), "last_modified": now}
        name = self.kind.unique_attr
        if doc.get(name) == row.doc.get(name) and doc.get("externalId") == row.doc.get(
            "externalId"
        ):
            # The indexed columns stay as they are: left out of the statement, since SQLite
            # rewrites an index entry for every indexed column it sets, to the same value too
            # (measured: 3 pages written for a PATCH of a user's name instead of 1).
            key = self._update_doc
            if self.kind is USERS:
                values["active"] = doc.get("active")  # not indexed
        else:
            key = self._update
            values.update(columns_of(self.kind, doc))
        stmt = STATEMENTS.get(
            conn,
            key,
            lambda: (
                self.t.update()
                .where(self.t.c.pk == _B("pk_"))
                .values({**{k: _B(k) for k in values}, "version": self.t.c.version + 1})
                .returning(self.t.c.version)
            ),
        )
        try:
            version = stmt.run(conn, {**values, "pk_": row.pk}).scalar_one()
        except IntegrityError:
            raise uniqueness_error(self.kind, doc) from None
        if member_ops and not done:
            done = [apply_member_op(conn, row.pk, op) for op in member_ops]
        changes = member_changes(member_ops, done)
        if changes:
            detail = {**(detail or {}), "members": changes}
        A.record(conn, actor, operation, self.kind.name, row.id, detail)
        # A user's groups do not change when its document does.
        return Rec(row.pk, row.id, row.created, now, version, doc, row.groups)

    def delete(
        self, conn: sa.Connection, row: Rec, actor: A.Actor, if_match: str | Conditions | None
    ) -> None:
        check_etag(if_match, row, self.kind is USERS)
        stmt = STATEMENTS.get(
            conn, self._delete, lambda: self.t.delete().where(self.t.c.pk == _B("pk"))
        )
        stmt.run(conn, {"pk": row.pk})
        left = unlink(conn, self.kind, row)
        _bump_counter(conn, self.kind.name, -1)
        audit_delete(conn, actor, self.kind, row, left)


# ---------------------------------------------------------------------------------------------
# Membership (set-based)


def unlink(
    conn: sa.Connection, kind: Kind, row: Rec, touched: dict[int, str] | None = None
) -> list[str]:
    """A deleted user or group is no longer anybody's member, and a deleted group has no
    members (no foreign key cascades: migration 0004). Run after the row's DELETE, in its
    transaction: on PostgreSQL these statements' snapshots then show any membership a
    concurrent group PATCH committed while the DELETE waited for its lock.

    The groups it leaves get a new version and lastModified: their members changed, and a
    client holding the old ETag must not be told (304) that its copy is current. ``touched``:
    the groups ``touch_groups`` already gave one (before the DELETE, see there); None to do
    it here. Returns the ids of the groups it left, sorted, for the delete's audit record."""
    if touched is None:
        touched = touch_groups(conn, row.id)
    if kind is GROUPS:
        name, cond = (
            "members.unlink_group",
            sa.or_(members.c.member_id == _B("id"), members.c.group_pk == _B("pk")),
        )
        params: dict[str, Any] = {"id": row.id, "pk": row.pk}
    else:
        name, cond = "members.unlink", members.c.member_id == _B("id")
        params = {"id": row.id}
    left = STATEMENTS.get(
        conn, name, lambda: members.delete().where(cond).returning(members.c.group_pk)
    ).run(conn, params)
    # The groups it really left: on PostgreSQL a concurrent PATCH may have removed it from a
    # touched group, or added it to another, while the DELETE waited for the lock; the
    # records must name only the memberships this DELETE removed. (A deleted group's own
    # memberships name itself: not a group it leaves.)
    gone = {pk for (pk,) in left} - ({row.pk} if kind is GROUPS else set())
    ids = {touched[pk] for pk in gone if pk in touched}
    late = gone - touched.keys()
    if late:
        ids.update(_touch(conn, sorted(late)))
    return sorted(ids)


def audit_delete(
    conn: sa.Connection, actor: A.Actor, kind: Kind, row: Rec, left: list[str]
) -> None:
    """The delete's audit record, and one for each group it left (``member.delete``): those
    groups changed (a new version), and their history showed nothing of it, so "who lost
    access to this group, and when" had no answer there. The record names the resource (its
    userName or displayName): once retention has pruned its creation, an id alone says
    nothing of who was deleted."""
    rid = row.id
    detail: dict[str, Any] = {kind.unique_attr: row.doc.get(kind.unique_attr)}
    if left:
        detail["groups"] = left  # the groups whose members it changed
    A.record(conn, actor, "delete", kind.name, rid, detail)
    for gid in left:
        detail = {"members": [{"op": "remove", "ids": [rid]}], "deleted": kind.name}
        A.record(conn, actor, "member.delete", "Group", gid, detail)


def touch_groups(conn: sa.Connection, member_id: str) -> dict[int, str]:
    """Give the groups of ``member_id`` a new version; their ids by pk.

    On PostgreSQL their rows are locked in ``pk`` order: two deletes of members of the same
    groups then queue instead of deadlocking. The SCIM API's DELETE runs this before it
    deletes the row, so that it takes locks as a group PUT does, groups before their members
    (a PUT adding the member, racing the DELETE, deadlocked with it). The conditional group
    PATCH still takes the members it adds first (see ``docs/architecture.md``, Deadlocks)."""
    return dict(
        STATEMENTS.get(conn, "members.touch_groups", lambda: _touch_groups(conn)).run(
            conn, {"id": member_id, "now": now_datetime()}
        )
    )


def _touch_groups(conn: sa.Connection) -> Any:
    of_member: Any = sa.select(members.c.group_pk).where(members.c.member_id == _B("id"))
    if conn.dialect.name == "postgresql":
        of_member = (
            sa.select(groups.c.pk)
            .where(groups.c.pk.in_(of_member))
            .order_by(groups.c.pk)
            .with_for_update()
        )
    return (
        groups.update()
        .where(groups.c.pk.in_(of_member))
        .values(
            version=groups.c.version + 1,
            last_modified=modified.after(conn, groups.c.last_modified, _B("now")),
        )
        .returning(groups.c.pk, groups.c.id)
    )


def _touch(conn: sa.Connection, pks: list[int]) -> list[str]:
    return list(
        conn.execute(
            groups.update()
            .where(groups.c.pk.in_(pks))
            .values(
                version=groups.c.version + 1,
                last_modified=modified.after(conn, groups.c.last_modified, now_datetime()),
            )
            .returning(groups.c.id)
        ).scalars()
    )


def _batchable(key: Any) -> bool:
    """Whether ``key`` can join a batch's JSON array: a key PostgreSQL cannot take (a NUL, a
    lone surrogate) fails alone in its own statement instead of failing the batch."""
    if not isinstance(key, str) or "\x00" in key:
        return False
    try:
        key.encode()
    except UnicodeEncodeError:
        return False
    return True


def _ids_param(ids: list[str]) -> str:
    """A list of ids as one statement parameter: JSON text (``IDS`` unpacks it).

    On PostgreSQL a JSON array and ``jsonb_array_elements_text`` instead of a ``TEXT[]``:
    psycopg dumps a list of 100 ids in Python, ~75 µs of client CPU per statement, where
    orjson takes ~3 (measured: 102-104 against 28-34 µs for the whole statement).
    """
    return dump_json(ids)


# PostgreSQL: the rows of a JSON array parameter (see ``_ids_param``).
PG_IDS = "jsonb_array_elements_text(CAST({} AS JSONB))"


def _members_sql(conn: sa.Connection, sql: str) -> sa.TextClause:
    """``sql`` with ``IDS`` standing for the rows of the ``:ids`` parameter (one column ``value``).

    One statement with one parameter for any number of ids: its SQL is compiled once and
    prepared once by the driver, where an ``IN (?, ?, ...)`` list would be a new statement for
    every batch size.
    """
    if conn.dialect.name == "sqlite":
        rows = "(SELECT value FROM json_each(:ids))"
    else:
        rows = f"(SELECT {PG_IDS.format(':ids')} AS value)"
    return sa.text(sql.replace("IDS", rows))


def member_types(conn: sa.Connection, ids: Iterable[str]) -> dict[str, str]:
    """Map each existing id to "User" or "Group"; unknown ids are missing from the result."""
    wanted = list(dict.fromkeys(ids))
    out: dict[str, str] = {}
    if not wanted:
        return out
    for kind, table in (("User", "users"), ("Group", "groups")):
        todo = [x for x in wanted if x not in out]
        if not todo:
            break
        # On PostgreSQL the found rows stay locked against deletion until the membership is
        # committed: a user deleted meanwhile would otherwise keep a membership row (its
        # delete removed those it could see before this one was written).
        lock = " FOR SHARE" if _locking(conn) else ""
        find = STATEMENTS.get(
            conn,
            f"members.find_{table}",
            lambda t=table, lk=lock: _members_sql(conn, f"SELECT id FROM {t} WHERE id IN IDS{lk}"),
        )
        for (rid,) in find.run(conn, {"ids": _ids_param(todo)}):
            out[rid] = kind
    return out


def resolve_members(conn: sa.Connection, items: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """The ids of ``items`` by member type ("User", "Group"), sorted; unknown ids are a 400."""
    ids = list(dict.fromkeys(i["value"] for i in items))
    types = member_types(conn, ids)
    if len(types) < len(ids):
        raise UnknownMembers([x for x in ids if x not in types])
    by_type: dict[str, list[str]] = {}
    for x in sorted(ids):  # key order: index pages are visited in order
        by_type.setdefault(types[x], []).append(x)
    return by_type


# The groups to add that are not members yet (a cycle stored before the check existed must
# not refuse re-sending a member that is there), and theirs, down to ``group_pk`` if it is one.
_HOLDS = sa.text(
    "WITH RECURSIVE d(pk) AS (SELECT pk FROM groups WHERE id IN :ids AND id NOT IN"
    " (SELECT member_id FROM members WHERE group_pk = :group_pk)"
    " UNION SELECT g.pk FROM d JOIN members m ON m.group_pk = d.pk AND m.member_type = 'Group'"
    " JOIN groups g ON g.id = m.member_id)"
    " SELECT g.id FROM d JOIN groups g ON g.pk = d.pk WHERE d.pk = :group_pk LIMIT 1"
).bindparams(sa.bindparam("ids", expanding=True))
# PostgreSQL: writes adding groups take turns (a transaction-level advisory lock), since each
# checks the memberships the others have not committed yet: two at once (B into A, D into C,
# with C holding... D holding A) closed a cycle neither saw. SQLite writes take turns anyway.
_NESTING_LOCK = sa.text("SELECT pg_advisory_xact_lock(7305122801)")


def _no_cycle(conn: sa.Connection, group_pk: int, group_ids: list[str]) -> None:
    """Refuse member groups that hold ``group_pk`` (among their members, or theirs...): the
    group would be its own ancestor, as a group in its own members would (refused), and any
    walk of nested groups would not end. Only writes adding groups pay this."""
    if conn.dialect.name == "postgresql":
        conn.execute(_NESTING_LOCK)
    found = conn.execute(_HOLDS, {"ids": group_ids, "group_pk": group_pk}).first()
    if found is not None:
        raise InvalidValue(
            f"group '{found[0]}' is already among the members of the group(s) being added"
            f" ({', '.join(group_ids[:5])}), directly or through others: a group cannot be"
            " its own ancestor"
        )


def add_members(conn: sa.Connection, group_pk: int, items: Sequence[dict[str, Any]]) -> list[str]:
    """Insert-if-absent: adding an existing member is a no-op (Entra re-sends adds). Returns
    the ids that were new (for the audit record, which names only real changes)."""
    if not items:
        return []
    by_type = resolve_members(conn, items)
    if by_type.get("Group"):
        _no_cycle(conn, group_pk, by_type["Group"])
    if conn.dialect.name == "sqlite":
        return _add_rows(conn, [(group_pk, x, t) for t, ids in by_type.items() for x in ids])
    insert = STATEMENTS.get(
        conn,
        "members.insert",
        lambda: _members_sql(
            conn,
            "INSERT INTO members (group_pk, member_id, member_type)"
            " SELECT :group_pk, value, :member_type FROM IDS AS ids"
            " ON CONFLICT DO NOTHING RETURNING member_id",
        ),
    )
    new: set[str] = set()
    for member_type, ids in by_type.items():
        params = {"group_pk": group_pk, "member_type": member_type, "ids": _ids_param(ids)}
        new.update(mid for (mid,) in insert.run(conn, params))
    return [x for t, ids in by_type.items() for x in ids if x in new]


def _add_rows(conn: sa.Connection, rows: list[tuple[int, str, str]]) -> list[str]:
    """SQLite: insert the membership rows absent; the member ids inserted.

    One prepared INSERT run per row by the driver: measured 2x faster than the same rows
    inserted with one INSERT ... SELECT from json_each (with RETURNING ~2x slower still). Its
    count tells whether every row was new or none was (Entra re-sends adds), the usual cases;
    when only some were, the rows are inserted again one by one, from a savepoint, to learn
    which (a savepoint costs ~3 µs, asking first which are members ~45 µs per 100 ids)."""
    insert = STATEMENTS.get(
        conn,
        "members.insert_row",
        lambda: sa.text(
            "INSERT INTO members (group_pk, member_id, member_type)"
            " VALUES (:group_pk, :member_id, :member_type) ON CONFLICT DO NOTHING"
        ),
    )
    cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.execute("SAVEPOINT scimd_members")
        cur.executemany(insert.sql, rows)
        new = cur.rowcount  # read before the RELEASE, which sets it to -1
        if new in (0, len(rows)):  # none new (Entra re-sends adds), or all
            cur.execute("RELEASE scimd_members")
            return [mid for _, mid, _ in rows] if new else []
        cur.execute("ROLLBACK TO scimd_members")
        cur.execute("RELEASE scimd_members")
        added = []
        for row in rows:
            cur.execute(insert.sql, row)
            if cur.rowcount:
                added.append(row[1])
        return added
    finally:
        cur.close()


# PostgreSQL: the rows of group ``:group_pk`` for the ids ``:ids``, one primary-key probe per
# id. Written as ``group_pk = $1 AND member_id IN (ids)`` (or as a plain join), a prepared
# statement's generic plan (PostgreSQL's choice after five runs) reads every member of the
# group and filters them: it estimates the group's size from the average group, and a
# 100,000-member group then took ~17 ms to remove 100 members instead of well under one. The
# LIMIT keeps the per-id subquery from being flattened into that join.
MEMBER_PROBE = (
    f"SELECT m.ctid FROM {PG_IDS.format(':ids')} AS r(id) CROSS JOIN LATERAL"
    " (SELECT ctid FROM members WHERE group_pk = :group_pk AND member_id = r.id LIMIT 1) AS m"
)


def remove_members(conn: sa.Connection, group_pk: int, ids: Sequence[str]) -> list[str]:
    """Delete the listed members; ids that are not members are ignored. Returns those that
    were members, sorted."""
    if not ids:
        return []
    wanted = sorted(set(ids))
    params = {"group_pk": group_pk, "ids": _ids_param(wanted)}
    if conn.dialect.name == "sqlite":
        return _remove_rows(conn, params, wanted)
    sql = f"DELETE FROM members WHERE ctid = ANY(ARRAY({MEMBER_PROBE})) RETURNING member_id"
    delete = STATEMENTS.get(conn, "members.delete", lambda: _members_sql(conn, sql))
    return sorted(mid for (mid,) in delete.run(conn, params))


def _remove_rows(conn: sa.Connection, params: dict[str, Any], wanted: list[str]) -> list[str]:
    """SQLite: delete the membership rows of the ``wanted`` ids (sorted, in ``params``);
    those that were members.

    Its count tells whether all of them were, or none, the usual cases: rows returned by a
    RETURNING cost ~100 µs per 100 ids through the result machinery, so they are asked for,
    from a savepoint, only when some of the ids were not members."""
    delete = STATEMENTS.get(
        conn,
        "members.delete",
        lambda: _members_sql(
            conn, "DELETE FROM members WHERE group_pk = :group_pk AND member_id IN IDS"
        ),
    )
    returning = STATEMENTS.get(
        conn,
        "members.delete_returning",
        lambda: _members_sql(
            conn,
            "DELETE FROM members WHERE group_pk = :group_pk AND member_id IN IDS"
            " RETURNING member_id",
        ),
    )
    cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.execute("SAVEPOINT scimd_members")
        cur.execute(delete.sql, delete.args(params))
        gone = cur.rowcount  # read before the RELEASE, which sets it to -1
        if gone in (0, len(wanted)):
            cur.execute("RELEASE scimd_members")
            return wanted if gone else []
        cur.execute("ROLLBACK TO scimd_members")
        cur.execute("RELEASE scimd_members")
        cur.execute(returning.sql, returning.args(params))
        return sorted(mid for (mid,) in cur.fetchall())
    finally:
        cur.close()


def _remove_all_members(conn: sa.Connection, group_pk: int) -> list[str]:
    """Delete every member; the ids removed (for the audit record: the request named none)."""
    delete = STATEMENTS.get(
        conn,
        "members.delete_all",
        lambda: sa.text("DELETE FROM members WHERE group_pk = :group_pk RETURNING member_id"),
    )
    return sorted(mid for (mid,) in delete.run(conn, {"group_pk": group_pk}))


def _remove_members_but(conn: sa.Connection, group_pk: int, keep: Sequence[str]) -> list[str]:
    """Delete the members not in ``keep``; the ids removed."""
    delete = STATEMENTS.get(
        conn,
        "members.delete_but",
        lambda: _members_sql(
            conn,
            "DELETE FROM members WHERE group_pk = :group_pk AND member_id NOT IN IDS"
            " RETURNING member_id",
        ),
    )
    rows = delete.run(conn, {"group_pk": group_pk, "ids": _ids_param(sorted(keep))})
    return sorted(mid for (mid,) in rows)


@dataclass
class MemberChange:
    """What one member operation changed: the ids it added and those it removed."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


def apply_member_op(conn: sa.Connection, group_pk: int, op: P.MemberOp) -> MemberChange:
    """Apply one member operation (false: no change)."""
    if op.kind == "add":
        return MemberChange(added=add_members(conn, group_pk, op.members))
    if op.kind == "remove":
        ids = [m["value"] for m in op.members]
        return MemberChange(removed=remove_members(conn, group_pk, ids))
    if op.kind == "remove_all" or not op.members:  # replace with no members too
        return MemberChange(removed=_remove_all_members(conn, group_pk))
    # replace: the members that stay are neither deleted nor written again
    new = add_members(conn, group_pk, op.members)  # first: unknown ids fail before any delete
    gone = _remove_members_but(conn, group_pk, [m["value"] for m in op.members])
    return MemberChange(new, gone)


def member_changes(ops: Sequence[P.MemberOp], done: Sequence[MemberChange]) -> list[dict[str, Any]]:
    """Which members each change really added or removed, for the audit record: it answers
    "who added X to this group, and when" (a PATCH's operations name only the path). Ids
    asked but already so (Entra re-sends adds) are not named; a change of nothing is left
    out. A replace names those it added and those it removed (the members it set are the
    group's members after it: 100,000 ids given twice made a record of ~7 MB)."""
    out: list[dict[str, Any]] = []
    for op, did in zip(ops, done, strict=True):
        if not did:
            continue
        if op.kind == "replace":
            out.append({"op": op.kind, "added": did.added, "removed": did.removed})
        else:
            out.append({"op": op.kind, "ids": did.added if op.kind == "add" else did.removed})
    return out


def load_members(conn: sa.Connection, group_pk: int) -> list[dict[str, Any]]:
    stmt = STATEMENTS.get(
        conn,
        "members.load",
        lambda: (
            sa.select(members.c.member_id, members.c.member_type)
            .where(members.c.group_pk == _B("group_pk"))
            .order_by(members.c.member_id)
        ),
    )
    return [{"value": mid, "type": mt} for mid, mt in stmt.run(conn, {"group_pk": group_pk})]


def render_members(rows: list[dict[str, Any]], base: str) -> list[dict[str, Any]]:
    return [
        {
            "value": m["value"],
            "$ref": f"{base}/{'Users' if m['type'] == 'User' else 'Groups'}/{m['value']}",
            "type": m["type"],
        }
        for m in rows
    ]


# PostgreSQL: the (member_id, group id, displayName) rows of some members, read from the
# member's side: each member's rows by index, then one primary-key probe of ``groups`` per row.
# The OFFSET 0 fences keep PostgreSQL from planning the join itself: when its statistics put
# many memberships on each member (e.g. taken while a sync was filling groups), it chose to walk
# every group and probe the membership key for each (~14 ms of server time for a page of 100
# users in 100 groups instead of ~0.5, measured), or to scan all memberships for a list of
# ids, and the cost of a GET of a user then grew with the number of groups.
def _pg_groups_of(member_rows: str) -> str:
    """``member_rows``: a FROM item ``m`` with the members' (member_id, group_pk) rows."""
    return (
        f"SELECT m.member_id, g.id, g.display_name, g.display_name_lower FROM {member_rows}"
        " CROSS JOIN LATERAL (SELECT id, display_name, display_name_lower FROM groups"
        " WHERE pk = m.group_pk OFFSET 0) AS g"
    )


def _pg_member_rows(member_id: str) -> str:
    return f"(SELECT member_id, group_pk FROM members WHERE member_id = {member_id} OFFSET 0) AS m"


def _groups_column(dialect: str) -> Any:
    """User.groups as a JSON array of [id, displayName] pairs: a correlated subquery."""
    if dialect == "postgresql":
        pairs = _pg_groups_of(_pg_member_rows("users.id"))
        return sa.literal_column(
            "(SELECT coalesce(json_agg(json_build_array(p.id, p.display_name)), '[]'::json)"
            f" FROM ({pairs}) AS p)"
        ).label("groups")
    pair_src = members.join(groups, groups.c.pk == members.c.group_pk)
    agg = sa.func.json_group_array(sa.func.json_array(groups.c.id, groups.c.display_name))
    return (
        sa.select(agg)
        .select_from(pair_src)
        .where(members.c.member_id == users.c.id)
        .scalar_subquery()
        .label("groups")
    )


def groups_of(conn: sa.Connection, user_ids: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """Each user's groups as (id, displayName) pairs, from the membership table (direct
    memberships); users in no group are left out."""
    out: dict[str, list[tuple[str, str]]] = {}
    if not user_ids:
        return out
    many = len(user_ids) > 1
    if conn.dialect.name == "postgresql":
        if many:  # one index probe per id, whatever the estimates
            found = f"{PG_IDS.format(':ids')} AS r(id) CROSS JOIN LATERAL {_pg_member_rows('r.id')}"
        else:
            found = _pg_member_rows(":id")
        sql = f"SELECT p.member_id, p.id, p.display_name FROM ({_pg_groups_of(found)})"
        sql += " AS p ORDER BY p.display_name_lower"
    else:
        sql = (
            "SELECT members.member_id, groups.id, groups.display_name FROM members"
            " JOIN groups ON groups.pk = members.group_pk WHERE members.member_id"
            f" {'IN IDS' if many else '= :id'} ORDER BY groups.display_name_lower"
        )
    if many:  # a page of users: one prepared statement, the ids as one parameter
        stmt = STATEMENTS.get(conn, "groups_of.many", lambda: _members_sql(conn, sql))
        rows = stmt.run(conn, {"ids": _ids_param(list(user_ids))})
    else:  # one user: a prepared statement
        stmt = STATEMENTS.get(conn, "groups_of.one", lambda: sa.text(sql))
        rows = stmt.run(conn, {"id": user_ids[0]})
    for uid, gid, name in rows:
        out.setdefault(uid, []).append((gid, name))
    return out


def render_groups(pairs: list[tuple[str, str]], base: str) -> list[dict[str, Any]]:
    """User.groups entries for (id, displayName) pairs: direct memberships."""
    return [
        {"value": gid, "$ref": f"{base}/Groups/{gid}", "display": name, "type": "direct"}
        for gid, name in pairs
    ]


def _after(key: Any, nullable: bool, value: Any, last: int, pk: Any, descending: bool) -> Any:
    """Rows after (``value``, ``last``) in the order of ``sqlfilter.sort_clauses``: the key
    ascending with absent values last (descending, first), then pk ascending."""
    if isinstance(value, bool):  # a bound value: SQLAlchemy refuses ``key > True``
        value = sa.literal(value, sa.Boolean)
    same = sa.and_(key.is_(None) if value is None else key == value, pk > last)
    if value is None:
        # Absent values: last ascending (only more of them follow), first descending.
        return same if not descending else sa.or_(same, key.is_not(None))
    beyond = key < value if descending else key > value
    if nullable and not descending:
        return sa.or_(beyond, same, key.is_(None))
    return sa.or_(beyond, same)
