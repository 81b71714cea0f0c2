"""The directory: every SCIM operation on Users and Groups as one transaction.

The web layer parses a request, calls one method here and renders what it returns. Each write
validates with the protocol core, changes the tables, and appends its audit row in the same
transaction, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from scimd.scim import cursor as C
from scimd.scim import patch as P
from scimd.scim import resource as R
from scimd.scim import schema as S
from scimd.scim.errors import (
    InvalidCursor,
    InvalidFilter,
    InvalidPath,
    InvalidValue,
    NotFound,
    ScimError,
    UnknownMembers,
    clipped,
)
from scimd.scim.filter import AttrPath, Filter
from scimd.scim.query import bind, bind_each, sort_path
from scimd.scim.values import fold
from scimd.store import audit as A
from scimd.store import conditional, onloop, versions
from scimd.store import properties as props
from scimd.store.engine import (
    IMMEDIATE_NOWAIT,
    DatabaseFileGone,
    file_identity,
    is_read_only,
)
from scimd.store.prepared import dump_json
from scimd.store.resources import (
    GROUPS,
    PG_IDS,
    STATEMENTS,
    USERS,
    Conditions,
    Rec,
    Repository,
    check_etag,
    etag,
    groups_of,
    load_members,
    member_types,
    render_groups,
    render_members,
    resolve_members,
    row_tag,
    uniqueness_error,
    user_etag,
)
from scimd.store.sqlfilter import sort_value
from scimd.store.tables import groups as groups_table
from scimd.store.tables import members

# A request's authorisation, run with the version counters before an operation decides
# anything (inside a write's transaction); returns who acts, for the audit log.
Gate = Callable[[sa.Connection, versions.Versions], A.Actor]

log = logging.getLogger("scimd.store")

# Conditional writes (``conditional``) started over before one runs in a locking transaction.
_CONDITIONAL_ATTEMPTS = 3
# A sorted search across resource types merges each type's first results: how many at most.
ROOT_SORT_WINDOW = 10_000
# PostgreSQL's deadlock_detected and serialization_failure: the transaction was rolled back.
_RETRY_STATES = frozenset({"40P01", "40001"})
_DEADLOCK_ATTEMPTS = 6


_NO_FILE = (-1, -1)  # ``file_identity`` of a path with no file


@dataclass(frozen=True, slots=True)
class Listing:
    total: int
    start: int
    resources: list[dict[str, Any]]
    next_cursor: str | None = None  # a cursor-paged listing's (RFC 9865), None on its last page
    by_cursor: bool = False


@dataclass(frozen=True, slots=True)
class Written:
    resource: dict[str, Any] | None
    etag: str
    changed: bool = True


class BatchLost(ScimError):
    """A group commit whose transaction SQLite rolled back under one of its writes."""

    status = 503

    def __init__(self) -> None:
        super().__init__(
            "the change was not saved: the database failed under the batch it was in (a full"
            " disk, an I/O error); retry the request"
        )


class Directory:
    """Users and Groups over one engine; safe to share between requests of one process."""

    def __init__(self, engine: sa.Engine, *, properties_urn: str = S.USER_PROPERTIES_SCHEMA):
        self.engine = engine
        self.properties_urn = properties_urn
        self._lock = threading.Lock()
        self._probed: tuple[str | None, Filter | None, tuple[str, Any] | None] = (None, None, None)
        self._local = threading.local()
        # Every thread's connections, so that ``close`` ends them all: the portal's worker
        # threads leave theirs behind, garbage collected open once the threads are gone.
        self._open: dict[sa.Connection, int] = {}  # and the thread that uses each
        self._severed: set[int] = set()  # connections cut by ``sever_thread``: replace them
        self.sqlite = engine.dialect.name == "sqlite"
        # The SQLite file's device and inode, checked before each write transaction and new
        # connection (``check_file``); None: not a file (PostgreSQL, an in-memory database).
        self._file = file_identity(engine)
        # Writes PostgreSQL ended as deadlock (or serialization) victims, run again: exported
        # as ``scimd_db_write_retries``; none are expected from any client's pattern.
        self.write_retries = 0
        self._user_type: tuple[int, S.ResourceType] = (-1, S.user_type((), properties_urn))
        self.repos = {"User": Repository(USERS), "Group": Repository(GROUPS)}
        # The version counters this process saw last (every authorised request reads them).
        self._seen: versions.Versions | None = None

    # -- transactions -----------------------------------------------------------------------
    # Each thread keeps its connections: the server's event loop is one thread (SQLite calls run
    # there, and never yield to the loop between BEGIN and COMMIT) and network databases run in
    # a bounded pool of worker threads. No pool checkout and reset per request. Reads and writes
    # use different connections, so reads never see a transaction that is still open (a group
    # commit, see ``begin_batch``).
    def _thread_connection(self, reads: bool = False) -> sa.Connection:
        borrowed = onloop.BORROWED.get()
        if borrowed is not None:  # a call on the event loop (``store.onloop``)
            return borrowed[0] if reads else borrowed[1]
        attr = "rconn" if reads else "conn"
        conn: sa.Connection | None = getattr(self._local, attr, None)
        if (
            conn is None
            or conn.closed
            or conn.invalidated
            or id(conn) in self._severed
            or self._lost(conn)
        ):
            if conn is not None:
                self._severed.discard(id(conn))
            if conn is not None and not conn.closed:
                if not conn.invalidated:
                    conn.invalidate()  # never back to the pool
                conn.close()
            with self._lock:
                self._open.pop(conn, None)  # type: ignore[arg-type]
            self.check_file()
            conn = self.engine.connect()
            if reads and not self.sqlite:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            setattr(self._local, attr, conn)
            with self._lock:
                self._open[conn] = threading.get_ident()
        return conn

    def check_file(self) -> None:
        """Refuse to write to, or open, a SQLite file other than the one the server began
        with: removed under a running server, its open connections went on writing into the
        deleted file (writes were answered 201 and lost), and a new connection made an empty
        database at the path, which a restart then served. One ``stat`` per transaction."""
        if self._file is None:
            return
        now = file_identity(self.engine)
        if now != self._file:
            if self._file == _NO_FILE:  # made since this directory was (a first start)
                self._file = now
                return
            raise DatabaseFileGone(str(self.engine.url.database))

    def _lost(self, conn: sa.Connection) -> bool:
        """A network connection that broke under a statement run on the driver directly."""
        return not self.sqlite and bool(conn.connection.driver_connection.closed)  # type: ignore[union-attr]

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        conn = self._thread_connection(reads=True)
        # Reads need no BEGIN/COMMIT pair (two round trips on a network database): statements
        # run in autocommit mode; a Core statement's autobegun transaction is ended here.
        if self.sqlite:
            _begin_mode(conn, "DEFERRED")
        try:
            yield conn
        finally:
            if conn.in_transaction():
                conn.rollback()

    @contextmanager
    def write(self, *, wait: bool = True) -> Iterator[sa.Connection]:
        """A write transaction; inside another one on this thread, that one is joined.

        The SCIM API authenticates a write in the transaction that makes it, so the version
        counters it reads are those the write sees. Inside a group commit (``begin_batch``)
        the outermost write is a savepoint: if it fails, only its own changes are undone.
        ``wait=False``: on SQLite, fail at once ("database is locked", ``engine.is_busy``)
        rather than wait while another process writes.
        """
        conn = self._thread_connection()
        local = self._local
        if not conn.in_transaction():
            if self.sqlite:
                self.check_file()
                wait = wait and not getattr(local, "nowait", False)
                _begin_mode(conn, "IMMEDIATE" if wait else IMMEDIATE_NOWAIT)
            try:
                with conn.begin():
                    yield conn
            except Exception as e:
                if is_read_only(e):  # its session stays read-only: the next write gets another
                    conn.invalidate()
                raise
            return
        if not getattr(local, "batch", False) or getattr(local, "in_unit", False):
            yield conn
            return
        driver = conn.connection.driver_connection
        assert driver is not None
        if getattr(local, "batch_lost", False):
            # An earlier write of this batch took the whole transaction with it: a SAVEPOINT
            # now would begin a transaction of its own, committed by its RELEASE.
            raise BatchLost()
        local.in_unit = True
        driver.execute("SAVEPOINT unit")
        try:
            yield conn
            if self.sqlite and not driver.in_transaction:
                # Gone under a statement whose error was handled (the batch went with it):
                # RELEASE would fail with "no such savepoint", and the batch commit nothing.
                local.batch_lost = True
                raise BatchLost()
        except BaseException:
            if self.sqlite and not driver.in_transaction:
                # SQLite rolls back the whole transaction on a full disk, an I/O error, no
                # memory or an interrupt, not just the statement: the batch's earlier writes
                # went with it. ROLLBACK TO then failed ("no such savepoint"), hiding the real
                # error, and end_batch's COMMIT of nothing answered them as saved.
                local.batch_lost = True
            else:
                driver.execute("ROLLBACK TO unit")
                driver.execute("RELEASE unit")
            raise
        else:
            driver.execute("RELEASE unit")
        finally:
            local.in_unit = False

    def in_write(self) -> bool:
        """Whether a ``write()`` on this thread now would join a write already under way
        (rather than begin its own transaction or savepoint): its failure is that write's."""
        conn = self._thread_connection()
        local = self._local
        return conn.in_transaction() and (
            not getattr(local, "batch", False) or getattr(local, "in_unit", False)
        )

    @contextmanager
    def without_waiting(self) -> Iterator[None]:
        """This thread's writes fail at once when another process holds SQLite's write lock
        (``write(wait=False)``), for a caller that waits asynchronously and tries again."""
        self._local.nowait = True
        try:
            yield
        finally:
            self._local.nowait = False

    def begin_batch(self, *, wait: bool = True) -> sa.RootTransaction:
        """Open a transaction that several writes of this thread join (a group commit).

        Each write runs in its own savepoint; ``end_batch`` commits them together, so the pages
        they share (table ends, the counters, the audit log) are written once per batch.
        ``wait=False`` as for ``write``.
        """
        conn = self._thread_connection()
        if self.sqlite:
            self.check_file()
            _begin_mode(conn, "IMMEDIATE" if wait else IMMEDIATE_NOWAIT)
        tx = conn.begin()
        self._local.batch = True
        self._local.batch_lost = False
        return tx

    def end_batch(self, tx: sa.RootTransaction) -> None:
        """Commit a group commit (rolled back, and the error raised, if the commit fails).

        After a failed COMMIT the transaction is no longer active but still the connection's:
        it must be rolled back all the same, or every later write on this connection fails
        ("already initialized a Transaction") after the disk has recovered."""
        self._local.batch = False
        try:
            if self._local.batch_lost:  # nothing left to commit: every write of it must fail
                self._local.batch_lost = False
                raise BatchLost()
            tx.commit()
        except BaseException:
            try:
                tx.rollback()
                # SQLAlchemy sends no ROLLBACK for a transaction whose COMMIT failed, and
                # SQLite keeps such a transaction open (a failed deferred check, a full disk),
                # its write lock with it: other processes could not write meanwhile.
                driver = tx.connection.connection.dbapi_connection
                if driver is not None:
                    driver.rollback()
            except Exception:  # the connection itself is broken: the next write gets another
                log.warning("rollback after a failed commit failed", exc_info=True)
                tx.connection.invalidate()
            raise

    def close(self) -> None:
        """Close every thread's connections (call it once the threads are done with them)."""
        with self._lock:
            conns, self._open = list(self._open), {}
        for conn in conns:
            conn.close()

    def interrupt_threads(self, threads: set[int]) -> None:
        """SQLite: stop the statements that the connections of ``threads`` run (``interrupt``
        is safe from another thread), so that they can be closed: a scan still running at
        shutdown failed the app's shutdown when its connection was closed under it."""
        if not self.sqlite:
            return
        with self._lock:
            theirs = [c for c, t in self._open.items() if t in threads]
        for conn in theirs:
            driver = onloop.driver_of(conn)
            if driver is not None:
                driver.interrupt()

    def sever_thread(self, thread: int) -> None:
        """Shut down the sockets of a thread's network connections, from another thread: a
        statement waiting on a silent server then fails at once (``onloop.sever``)."""
        if self.sqlite:
            return
        with self._lock:
            theirs = [c for c, t in self._open.items() if t == thread]
        for conn in theirs:
            # The thread's other connection is cut too (which one waits is not known here),
            # so both are replaced before the thread's next use; a cut idle one looked alive.
            self._severed.add(id(conn))
            driver = onloop.driver_of(conn)
            if driver is not None:
                onloop.sever(driver)

    # -- schema -------------------------------------------------------------------------------
    def check_versions(self, conn: sa.Connection) -> versions.Versions:
        """Read the version counters (one statement) and refresh the cached User type."""
        v = versions.read(conn)
        if v.schema != self._user_type[0]:
            self._load_user_type(conn, v.schema)
        return v

    def user_type(self, conn: sa.Connection) -> S.ResourceType:
        """The User type with the current custom properties (reloaded when they change)."""
        version = props.schema_version(conn)
        cached_version, rt = self._user_type
        if version != cached_version:
            rt = self._load_user_type(conn, version)
        return rt

    def _load_user_type(self, conn: sa.Connection, version: int) -> S.ResourceType:
        props.check_loaded_urn(conn, self.properties_urn)
        rt = S.user_type(props.list_properties(conn), self.properties_urn)
        with self._lock:
            # Threads may race: never move the cache back to an older version.
            if version >= self._user_type[0]:
                self._user_type = (version, rt)
        return rt

    def resource_type(self, conn: sa.Connection, name: str) -> S.ResourceType:
        return self.user_type(conn) if name == "User" else S.GROUP_TYPE

    def resource_types(self, gate: Gate | None = None) -> list[S.ResourceType]:
        with self.read() as conn:
            if gate is None:
                return [self.user_type(conn), S.GROUP_TYPE]
            v = versions.read(conn)
            gate(conn, v)
            return [self._type_at(conn, "User", v), S.GROUP_TYPE]

    def authorise(self, gate: Gate) -> None:
        """Run a request's authorisation with the current version counters."""
        with self.read() as conn:
            v = versions.read(conn)
            gate(conn, v)
            self._type_at(conn, "User", v)

    # -- reads --------------------------------------------------------------------------------
    def stored_password(self, rid: str) -> str | None:
        """A user's password digest (compared with a password a request sends, before it)."""
        with self.read() as conn:
            try:
                row = self.repos["User"].get_row(conn, rid)
            except NotFound:
                return None
            value = row.doc.get("password")
            return value if isinstance(value, str) else None

    def get(
        self,
        name: str,
        rid: str,
        base: str,
        attributes: list[str] | None = None,
        excluded: list[str] | None = None,
        *,
        gate: Gate | None = None,
    ) -> tuple[dict[str, Any], str]:
        """One resource. With ``gate``, the version counters are read in the row's statement
        and ``gate`` (the request's authorisation) runs before anything else is decided."""
        with self.read() as conn:
            repo = self.repos[name]
            with_groups = name == "User"  # its ETag holds its groups, even when not returned
            if gate is None:
                rt = self.resource_type(conn, name)
                row = repo.get_row(conn, rid, with_groups)
            else:
                found, v = repo.get_row_gated(conn, rid, with_groups)
                gate(conn, v)
                rt = self._type_at(conn, name, v)
                if found is None:
                    raise NotFound(f"{name} '{clipped(rid)}' not found")
                row = found
            res = self._render_rows(conn, name, rt, [row], base, attributes, excluded)[0]
            return res, row_tag(row)

    def search(
        self,
        name: str,
        flt: Filter | None,
        base: str,
        *,
        start: int = 1,
        count: int = 100,
        sort_by: str | None = None,
        descending: bool = False,
        attributes: list[str] | None = None,
        excluded: list[str] | None = None,
        gate: Gate | None = None,
        bounded: bool = True,
    ) -> Listing:
        """A page of matches. With ``gate``, as for ``get``; an ``eq`` on an indexed column
        (Entra's matching probe) is then one statement, counters included. ``bounded``: a
        page of groups may hold fewer than ``count`` (``_render_rows``)."""
        with self.read() as conn:
            repo = self.repos[name]
            with_groups = name == "User" and _wants_groups(attributes or [], excluded or [])
            if gate is None:
                rt = self.resource_type(conn, name)
            else:
                probe = self._probe(name, flt) if start == 1 and not sort_by else None
                if probe is not None:
                    column, value = probe
                    rows, v = repo.eq_rows(conn, column, value, count + 1, with_groups, True)
                    assert v is not None
                    gate(conn, v)
                    rt = self._type_at(conn, name, v)
                    if len(rows) <= count:
                        resources = self._render_rows(
                            conn, name, rt, rows, base, attributes, excluded, bounded
                        )
                        return Listing(len(rows), start, resources)
                elif flt is None and not sort_by:
                    # A plain page (a client walking the list): one statement, counters included.
                    rows, v, total = repo.page_gated(conn, start, count, with_groups)
                    gate(conn, v)
                    rt = self._type_at(conn, name, v)
                    resources = self._render_rows(
                        conn, name, rt, rows, base, attributes, excluded, bounded
                    )
                    return Listing(total, start, resources)
                else:
                    v = versions.read(conn)
                    gate(conn, v)
                    rt = self._type_at(conn, name, v)
            bound = bind(flt, rt) if flt is not None else None
            sort_on = sort_path(rt, sort_by) if sort_by else None
            total, rows = repo.search(
                conn,
                rt,
                bound,
                start=start,
                count=count,
                sort_by=sort_on,
                descending=descending,
                with_groups=with_groups,
            )
            resources = self._render_rows(conn, name, rt, rows, base, attributes, excluded, bounded)
            return Listing(total, start, resources)

    def page(
        self,
        name: str | None,
        flt: Filter | None,
        base: str,
        *,
        cursor: str,
        key: bytes,
        count: int = 100,
        sort_by: str | None = None,
        descending: bool = False,
        attributes: list[str] | None = None,
        excluded: list[str] | None = None,
        gate: Gate | None = None,
    ) -> Listing:
        """A page of a cursor-paged search (RFC 9865) of ``name`` (None: Users, then Groups),
        ``cursor`` empty for the first page; ``key`` seals the cursors (the same in every
        server process)."""
        names = [name] if name is not None else ["User", "Group"]
        if name is None and sort_by:
            raise InvalidValue(
                "cursors page a sorted search of one resource type: search /Users or /Groups"
                " with this sortBy, or leave sortBy out across types"
            )
        now = time.time()
        with self.read() as conn:
            v = versions.read(conn)
            if gate is not None:
                gate(conn, v)
            rts = {n: self._type_at(conn, n, v) for n in names}
            # The sort attribute's type too: a property removed and defined again with another
            # type compared the cursor's text with numbers (a 500 on PostgreSQL).
            kinds = [_sort_kind(rt, sort_by) for rt in rts.values()] if sort_by else None
            bound = bind_each(flt, list(rts.values())) if flt is not None else [None] * len(names)
            # The query as resolved, not as spelled: "USERNAME sw" and a sortBy with the
            # schema's URN continue the cursors of "userName sw" and of plain userName.
            order = (
                str(sort_path(rts[name], sort_by))
                if sort_by and name
                else (sort_by or "").lower() or None
            )
            query = C.fingerprint(name, bound, order, descending, kinds)
            at = C.open_cursor(key, cursor, query, now, C.TIMEOUT) if cursor else None
            if at is not None and at.kind not in names:
                raise InvalidCursor("the cursor names a resource type this search does not cover")
            resources: list[dict[str, Any]] = []
            last: C.Position | None = None
            more = False
            total = 0
            cut = False
            first = names.index(at.kind) if at is not None else 0
            for i, n in enumerate(names):
                rt, repo = rts[n], self.repos[n]
                if i < first or (i > first and (len(resources) >= count or cut)):
                    matched = repo.matching(conn, rt, bound[i])  # before the page, or after
                    total += matched
                    more = more or (i > first and matched > 0)
                    continue
                rows, values, m, matched = repo.seek(
                    conn,
                    rt,
                    bound[i],
                    after=(at.value, at.key) if at is not None and i == first else None,
                    count=count - len(resources),
                    sort_by=sort_path(rt, sort_by) if sort_by else None,
                    descending=descending,
                )
                total += matched
                more = more or m
                if rows:
                    shown = self._render_rows(conn, n, rt, rows, base, attributes, excluded, True)
                    resources += shown
                    last = C.Position(n, values[len(shown) - 1], rows[len(shown) - 1].pk)
                    if len(shown) < len(rows):  # a page of groups full of members
                        more = cut = True
            next_cursor = C.seal(key, query, last, now) if more and last is not None else None
            return Listing(total, 1, resources, next_cursor, True)

    def indexed(self, name: str, flt: Filter) -> bool:
        """Whether an index answers ``flt`` (Entra's ``userName eq`` probes): no scan."""
        return self._probe(name, flt) is not None

    def _probe(self, name: str, flt: Filter | None) -> tuple[str, Any] | None:
        """(column, value) when ``flt`` is an ``eq`` on an indexed core attribute.

        Core attributes do not depend on custom properties, so the cached type binds them.
        """
        if flt is None:
            return None
        # The web layer asks first (``indexed``: may the search scan?), then the search: one
        # bind of the request's filter, not two (~3 µs of a ~80 µs userName probe).
        last_name, last_flt, last = self._probed
        if flt is last_flt and name == last_name:
            return last
        try:
            bound = bind(flt, self._user_type[1] if name == "User" else S.GROUP_TYPE)
        except InvalidFilter:
            found = None
        else:
            found = self.repos[name].indexed_eq(bound)
        self._probed = (name, flt, found)  # one tuple: a thread reads all of it or none
        return found

    def _type_at(self, conn: sa.Connection, name: str, v: versions.Versions) -> S.ResourceType:
        """The resource type at schema version ``v.schema`` (reloaded if the cache is older)."""
        self._seen = v
        if name != "User":
            return S.GROUP_TYPE
        if v.schema > self._user_type[0]:
            return self._load_user_type(conn, v.schema)
        return self._user_type[1]

    def search_all(
        self,
        flt: Filter | None,
        base: str,
        *,
        start: int = 1,
        count: int = 100,
        sort_by: str | None = None,
        descending: bool = False,
        attributes: list[str] | None = None,
        excluded: list[str] | None = None,
        gate: Gate | None = None,
    ) -> Listing:
        """Root-level search (RFC 7644 §3.4.3): Users, then Groups, paged as one list; with
        ``sort_by``, one list in that order."""
        with self.read() as conn:
            if gate is not None:
                v = versions.read(conn)
                gate(conn, v)
                user_rt = self._type_at(conn, "User", v)
            else:
                user_rt = self.user_type(conn)
        rts = {"User": user_rt, "Group": S.GROUP_TYPE}
        bound = bind_each(flt, list(rts.values())) if flt is not None else [None, None]
        flts = dict(zip(rts, bound, strict=True))
        if sort_by:
            return self._sorted_across(
                rts, flts, base, start, count, sort_by, descending, attributes, excluded
            )
        totals = [
            (name, self.search(name, flts[name], base, start=1, count=0).total) for name in rts
        ]
        resources: list[dict[str, Any]] = []
        remaining = count
        skip = start - 1
        for name, total in totals:
            if remaining <= 0:
                break
            if skip >= total:
                skip -= total
                continue
            page = self.search(
                name,
                flts[name],
                base,
                start=skip + 1,
                count=remaining,
                attributes=attributes,
                excluded=excluded,
            )
            resources.extend(page.resources)
            remaining -= len(page.resources)
            skip = 0
        return Listing(sum(t for _, t in totals), start, resources)

    def _sorted_across(
        self,
        rts: dict[str, S.ResourceType],
        flts: dict[str, Filter | None],
        base: str,
        start: int,
        count: int,
        sort_by: str,
        descending: bool,
        attributes: list[str] | None,
        excluded: list[str] | None,
    ) -> Listing:
        """Each type's first ``start - 1 + count`` matches in ``sort_by`` order, merged.

        A type without the attribute has no value for it: its resources sort as absent
        values do (last, or first when descending). Ties keep Users before Groups.
        """
        window = start - 1 + count
        if window > ROOT_SORT_WINDOW:
            raise ScimError(
                f"a sorted search across resource types pages through its first"
                f" {ROOT_SORT_WINDOW} results only (startIndex - 1 + count is {window});"
                " search /Users/.search or /Groups/.search to go further",
                scim_type="tooMany",
            )
        paths: dict[str, AttrPath | None] = {}
        unknown: InvalidPath | None = None
        for name, rt in rts.items():
            try:
                paths[name] = sort_path(rt, sort_by)
            except InvalidPath as e:
                unknown, paths[name] = unknown or e, None
        if unknown is not None and all(p is None for p in paths.values()):
            raise unknown
        items: list[tuple[Any, S.ResourceType, dict[str, Any]]] = []
        total = 0
        for name, rt in rts.items():
            path = paths[name]
            page = self.search(
                name,
                flts[name],
                base,
                count=window,
                sort_by=sort_by if path is not None else None,
                descending=descending,
                # Merged, then cut: every group of the window is needed, without its members
                # (a group cannot be sorted by them), which only those shown get.
                excluded=["members"] if name == "Group" else None,
                bounded=False,
            )
            total += page.total
            for res in page.resources:
                items.append((sort_value(res, path, rt) if path else None, rt, res))
        # Python's sort is stable, also with reverse=True: ties stay in type and pk order.
        items.sort(key=lambda it: _across_key(it[0]), reverse=descending)
        chosen = items[start - 1 : window]
        if _wants("members", S.GROUP_SCHEMA, *_lists(attributes, excluded)):
            chosen = self._with_members(chosen, base)
        resources = [R.project(res, rt, *_lists(attributes, excluded)) for _, rt, res in chosen]
        return Listing(total, start, resources)

    def _with_members(self, chosen: list[_Item], base: str) -> list[_Item]:
        """``chosen`` up to the group whose members would take the page past PAGE_MEMBERS
        (the first item always), its groups given their members."""
        ids = [res["id"] for _, rt, res in chosen if rt is S.GROUP_TYPE]
        if not ids:
            return chosen
        with self.read() as conn:
            q = sa.select(groups_table.c.id, groups_table.c.pk).where(groups_table.c.id.in_(ids))
            pks: dict[str, int] = {str(r[0]): int(r[1]) for r in conn.execute(q)}
            sizes = _member_counts(conn, list(pks.values()))
            held = [
                sizes.get(pks.get(res["id"], -1), 0) if rt is S.GROUP_TYPE else 0
                for _, rt, res in chosen
            ]
            kept = chosen[: _within_page(held)]
            # A group deleted since the window was read has no pk now, and no members.
            shown = [
                pks[res["id"]] for _, rt, res in kept if rt is S.GROUP_TYPE and res["id"] in pks
            ]
            mmap = _members_of(conn, shown)
        for _, rt, res in kept:
            if rt is S.GROUP_TYPE and res["id"] in pks:  # [] for none, as other reads give
                res["members"] = render_members(mmap.get(pks[res["id"]], []), base)
        return kept

    def _render_rows(
        self,
        conn: sa.Connection,
        name: str,
        rt: S.ResourceType,
        rows: list[Any],
        base: str,
        attributes: list[str] | None,
        excluded: list[str] | None,
        bounded: bool = False,
    ) -> list[dict[str, Any]]:
        """The rows rendered and projected. ``bounded`` (a page of a list): groups with their
        members only as far as ``PAGE_MEMBERS`` members go (the first always), so fewer may
        come back than ``rows`` (RFC 7644 §3.4.2.4 lets a page hold fewer than ``count``)."""
        repo = self.repos[name]
        attributes = attributes or []
        excluded = excluded or []
        out = []
        if name == "User":
            want_groups = _wants("groups", S.USER_SCHEMA, attributes, excluded)
            need = _wants_groups(attributes, excluded)  # the groups, or meta.version
            missing = [r.id for r in rows if r.groups is None]
            gmap = groups_of(conn, missing) if need and missing else {}
            for row in rows:
                pairs = row.groups if row.groups is not None else gmap.get(row.id, [])
                extra = {"groups": render_groups(pairs, base)} if want_groups and pairs else None
                tag = user_etag(row.version, pairs) if need and pairs else None
                res = repo.render(row, rt, base, extra, tag)
                out.append(R.project(res, rt, attributes, excluded))
        else:
            want_members = _wants("members", S.GROUP_SCHEMA, attributes, excluded)
            if want_members and bounded and len(rows) > 1:
                rows = _within_members(conn, rows)
            mmap = _members_of(conn, [r.pk for r in rows]) if want_members else {}
            for row in rows:
                extra = {"members": render_members(mmap[row.pk], base)} if row.pk in mmap else None
                out.append(R.project(repo.render(row, rt, base, extra), rt, attributes, excluded))
        return out

    # -- writes -------------------------------------------------------------------------------
    def _lock_groups(self, conn: sa.Connection, rid: str, items: Sequence[Any]) -> None:
        """PostgreSQL: lock the group ``rid`` and the groups among its new members, in ``pk``
        order, before anything else in the transaction. Group deletes lock the groups they
        touch in that order too, so writes of groups nested in each other queue instead of
        deadlocking (locking the group, then its member groups, they deadlocked: 277 in 1,800
        random nested writes from 12 threads, each retried). Users are locked after groups,
        by every write."""
        if self.sqlite:
            return
        ids = [i["value"] for i in items if isinstance(i, dict) and isinstance(i.get("value"), str)]
        if not ids:
            return
        STATEMENTS.get(
            conn,
            "groups.lock_nested",
            lambda: sa.text(
                "SELECT pk FROM groups WHERE id = :rid OR id IN"
                f" (SELECT {PG_IDS.format(':ids')}) ORDER BY pk FOR UPDATE"
            ),
        ).run(conn, {"rid": rid, "ids": dump_json(sorted(set(ids)))}).rowcount()

    # ``actor`` is who acts, or a ``Gate``: the request's authorisation, run inside the
    # write's transaction with the version counters (read with the row, where there is one)
    # and returning who acts.
    def _begin(
        self,
        conn: sa.Connection,
        name: str,
        actor: A.Actor | Gate,
        rid: str | None = None,
        with_groups: bool = False,
        lock: bool = True,
        assumed: versions.Versions | None = None,
    ) -> tuple[S.ResourceType, A.Actor, Rec | None, versions.Versions | None]:
        """Who acts, the resource type, the row (read for an update unless ``lock`` is off,
        see ``conditional``) and the version counters the authorisation saw (None for an
        ``Actor``). A create may authorise with ``assumed`` counters instead of reading them,
        when its statement checks them (``conditional``)."""
        repo = self.repos[name]
        if isinstance(actor, A.Actor):
            row = repo.get_row(conn, rid, with_groups, lock=lock) if rid is not None else None
            return self.resource_type(conn, name), actor, row, None
        if rid is None:
            if assumed is not None:
                v = assumed
            else:  # on SQLite a create runs in a write transaction (or a group commit's)
                v = versions.read(conn, write_locked=self.sqlite and conn.in_transaction())
            who = actor(conn, v)
            return self._type_at(conn, name, v), who, None, v
        found, v = repo.get_row_gated(conn, rid, with_groups, lock=lock)
        who = actor(conn, v)
        rt = self._type_at(conn, name, v)
        if found is None:
            raise NotFound(f"{name} '{clipped(rid)}' not found")
        return rt, who, found, v

    def _written(
        self,
        actor: A.Actor | Gate,
        attempt: Callable[[sa.Connection, bool], Written | None],
        conditional_ok: bool,
    ) -> Written:
        """Run a write: ``attempt(conn, at_once)`` does it in one conditional statement
        (``at_once``: on a network database, from the SCIM API, see ``conditional``) or in a
        transaction.

        A conditional attempt returns None when what it read moved before it wrote; it is
        started over a few times, then the write runs in a transaction that locks the row. It
        raises ``_UseTransaction`` for a change one statement does not express.

        PostgreSQL ends one of two transactions that wait for each other's row locks (a user
        DELETE locks the user, then the groups it leaves; a group PUT locks the group, then
        its new members): that one was rolled back whole and is run again, after a random
        pause that grows with each attempt, so that the two do not meet again at once (a
        DELETE racing four writers of its groups failed after three immediate attempts).
        """
        for attempt_no in range(_DEADLOCK_ATTEMPTS):
            try:
                return self._written_once(actor, attempt, conditional_ok)
            except sa.exc.OperationalError as e:
                if getattr(e.orig, "sqlstate", None) not in _RETRY_STATES:
                    raise
                if self._thread_connection().in_transaction():
                    raise  # inside a caller's transaction, which is rolled back too
                if attempt_no == _DEADLOCK_ATTEMPTS - 1:
                    # Seen with groups nested in each other written at once from several
                    # processes: the database is fine, the request kept losing.
                    log.warning(
                        "a write lost %d deadlocks in a row: %s", _DEADLOCK_ATTEMPTS, e.orig
                    )
                    raise ScimError(
                        f"the request conflicted with concurrent writes of the same users or"
                        f" groups {_DEADLOCK_ATTEMPTS} times in a row (a deadlock) and changed"
                        " nothing; retry it",
                        status=503,
                    ) from None
                self.write_retries += 1
                onloop.pause(random.uniform(0, min(0.5, 0.01 * 2**attempt_no)))
        raise AssertionError("unreachable")

    def _written_once(
        self,
        actor: A.Actor | Gate,
        attempt: Callable[[sa.Connection, bool], Written | None],
        conditional_ok: bool,
    ) -> Written:
        if conditional_ok and not self.sqlite and not isinstance(actor, A.Actor):
            try:
                for _ in range(_CONDITIONAL_ATTEMPTS):
                    with self.read() as conn:
                        written = attempt(conn, True)
                    if written is not None:
                        return written
            except _UseTransaction:
                pass
        with self.write() as conn:
            written = attempt(conn, False)
        assert written is not None
        return written

    def create(
        self,
        name: str,
        body: Any,
        actor: A.Actor | Gate,
        base: str,
        attributes: list[str] | None = None,
        excluded: list[str] | None = None,
    ) -> Written:
        first = True

        def attempt(conn: sa.Connection, at_once: bool) -> Written | None:
            nonlocal first
            # A conditional create first assumes the counters this process saw last (one
            # round trip instead of two); if they moved, it finds out and reads them.
            assumed = self._seen if at_once and first else None
            first = False
            if not at_once and name == "User" and conn.dialect.name == "postgresql":
                # The lock the INSERT takes anyway, taken before the counters are read: a
                # property removal (which locks users against writes) then either commits
                # first, and this create judges the body by the definitions after it, or
                # waits for it. Read first, a removal could strip and commit in between and
                # this create store a value of the removed property.
                conn.execute(sa.text("LOCK TABLE users IN ROW EXCLUSIVE MODE"))
            rt, who, _, v = self._begin(conn, name, actor, assumed=assumed)
            member_items: list[dict[str, Any]] = []
            if name == "Group" and isinstance(body, dict):
                doc_in, member_items = _split_members(body)
            else:
                doc_in = body
            try:
                doc = R.normalise(rt, doc_in)
                if name == "User":
                    # RFC 7643 gives `active` no default; clients (Okta's spec tests) expect a
                    # new user to be active or inactive, never neither.
                    doc.setdefault("active", True)
            except ScimError:
                if assumed is not None:
                    # Judged by counters that may have moved (a property added, the caller's
                    # access revoked): read them and judge again before answering.
                    return None
                raise
            if at_once:
                assert v is not None
                made = conditional.create_user(conn, doc, who, v)
                if made is None:
                    return None
                row = made
            else:
                row = self.repos[name].create(conn, doc, who, member_items)
            if name == "User":  # a new user is nobody's member yet: no groups query
                res = R.project(
                    self.repos[name].render(row, rt, base), rt, *_lists(attributes, excluded)
                )
            else:
                res = self._render_rows(conn, name, rt, [row], base, attributes, excluded)[0]
            return Written(res, etag(row.version))  # a new user is in no group

        return self._written(actor, attempt, name == "User")

    def replace(
        self,
        name: str,
        rid: str,
        body: Any,
        actor: A.Actor | Gate,
        base: str,
        if_match: str | Conditions | None,
        attributes: list[str] | None = None,
        excluded: list[str] | None = None,
    ) -> Written:
        def attempt(conn: sa.Connection, at_once: bool) -> Written | None:
            if name == "Group" and not at_once:
                self._lock_groups(conn, rid, _members_in(body, patch=False))
            rt, who, found, v = self._begin(
                conn, name, actor, rid, with_groups=name == "User", lock=not at_once
            )
            assert found is not None
            row = found
            repo = self.repos[name]
            check_etag(if_match, row, name == "User")
            member_ops: list[P.MemberOp] = []
            doc_in = body
            items: list[dict[str, Any]] | None = None
            if name == "Group" and isinstance(body, dict):
                doc_in, items = _split_members(body)
                _not_its_own_member(rid, items)
                member_ops = [P.MemberOp("replace", items)]
            doc = R.normalise(rt, doc_in)
            if "password" in row.doc and "password" not in doc:
                doc["password"] = row.doc["password"]  # writeOnly: PUT without it keeps it
            if name == "User" and "active" not in doc and "active" in row.doc:
                # RFC 7644 §3.5.1 lets a PUT's missing attribute be cleared or defaulted: a
                # user neither active nor inactive matched no `active eq` filter.
                doc["active"] = row.doc["active"]
            changed = doc != row.doc or (
                items is not None
                and {m["value"] for m in items} != {m["value"] for m in load_members(conn, row.pk)}
            )
            if not changed:
                pass  # no new version (RFC 7644 §3.14) and no audit record
            elif at_once:
                assert v is not None
                detail = _put_summary(row.doc, doc, repo.kind.unique_attr)
                new = conditional.replace_user(conn, row, doc, who, "replace", detail, v)
                if new is None:
                    return None
                row = new
            else:
                detail = _put_summary(row.doc, doc, repo.kind.unique_attr)
                row = repo.replace(conn, row, doc, who, "replace", detail, member_ops)
            res = self._render_rows(conn, name, rt, [row], base, attributes, excluded)[0]
            return Written(res, row_tag(row), changed)

        return self._written(actor, attempt, name == "User")

    def patch(
        self,
        name: str,
        rid: str,
        body: Any,
        actor: A.Actor | Gate,
        base: str,
        if_match: str | Conditions | None,
        *,
        render: bool = True,
        attributes: list[str] | None = None,
        excluded: list[str] | None = None,
    ) -> Written:
        want_groups = name == "User"  # its ETag holds its groups, even when not returned

        def attempt(conn: sa.Connection, at_once: bool) -> Written | None:
            if name == "Group" and not at_once:
                self._lock_groups(conn, rid, _members_in(body, patch=True))
            rt, who, found, v = self._begin(conn, name, actor, rid, want_groups, lock=not at_once)
            assert found is not None
            row = found
            repo = self.repos[name]
            check_etag(if_match, row, name == "User")
            result = P.apply_patch(
                rt,
                row.doc,
                body,
                load_members=lambda: load_members(conn, row.pk),
                member_types=lambda ids: member_types(conn, ids),
            )
            _not_its_own_member(rid, result.members_added)
            if result.changed:
                try:
                    new = _write_patch(conn, repo, row, result, who, v, if_match, at_once)
                except UnknownMembers as e:
                    raise result.locate(e) from None
                if new is None:
                    return None
                row = new
            res = (
                self._render_rows(conn, name, rt, [row], base, attributes, excluded)[0]
                if render
                else None
            )
            return Written(res, row_tag(row), row is not found)

        return self._written(actor, attempt, True)

    def delete(
        self, name: str, rid: str, actor: A.Actor | Gate, if_match: str | Conditions | None
    ) -> None:
        repo = self.repos[name]

        def attempt(conn: sa.Connection, at_once: bool) -> Written | None:
            # A user's If-None-Match compares its whole tag, which holds its groups.
            inm = isinstance(if_match, Conditions) and bool(if_match.if_none_match)
            _, who, row, v = self._begin(
                conn, name, actor, rid, with_groups=name == "User" and inm, lock=not at_once
            )
            assert row is not None
            if at_once:
                assert v is not None
                check_etag(if_match, row, name == "User")
                if not conditional.delete(conn, repo.kind, row, who, v):
                    return None
            else:
                repo.delete(conn, row, who, if_match)
            return Written(None, etag(row.version))

        self._written(actor, attempt, True)

    def exists(self, name: str, rid: str) -> bool:
        with self.read() as conn:
            try:
                self.repos[name].get_row(conn, rid)
            except NotFound:
                return False
            return True


def _write_patch(
    conn: sa.Connection,
    repo: Repository,
    row: Rec,
    result: P.PatchResult,
    who: A.Actor,
    v: versions.Versions | None,
    if_match: str | Conditions | None,
    at_once: bool,
) -> Rec | None:
    """Store a PATCH that changed ``row``: in one statement (``at_once``: None when it must
    start over) or in the open transaction. The audit record names what changed."""
    detail: dict[str, Any] = {"operations": _op_summary(result.operations)}
    if len(result.operations) > _OPS_LISTED:  # said, not silently cut
        detail["more_operations"] = len(result.operations) - _OPS_LISTED
    if row.doc.get("active") != result.doc.get("active"):
        # However the PATCH spelled it (a path-less key with the core URN too).
        detail["active"] = result.doc.get("active")
    named = repo.kind.unique_attr  # a rename: the record says the new name
    if row.doc.get(named) != result.doc.get(named):
        detail[named] = result.doc.get(named)
    if not at_once:
        return repo.replace(conn, row, result.doc, who, "patch", detail, result.member_ops)
    assert v is not None
    if repo.kind.name == "User":
        return conditional.replace_user(conn, row, result.doc, who, "patch", detail, v)
    return _patch_group(conn, row, result, who, detail, v, if_match)


class _UseTransaction(Exception):
    """A write that one conditional statement cannot make: run it in a transaction."""


def _patch_group(
    conn: sa.Connection,
    row: Rec,
    result: P.PatchResult,
    who: A.Actor,
    detail: dict[str, Any],
    v: versions.Versions,
    if_match: str | Conditions | None,
) -> Rec | None:
    """A group PATCH as one statement when its member changes are adds and removes of
    different ids (Entra's); replacing all members, or adding and removing one id, are
    ordered changes and run in a transaction."""
    adds: list[str] = []
    removes: list[str] = []
    for op in result.member_ops:
        if op.kind == "add":
            adds += [m["value"] for m in op.members]
        elif op.kind == "remove":
            removes += [m["value"] for m in op.members]
        else:
            raise _UseTransaction
    if set(adds) & set(removes):
        raise _UseTransaction
    try:
        return conditional.patch_group(
            conn, row, result.doc, adds, removes, who, detail, v, exact=if_match is not None
        )
    except conditional.MissingMembers:
        # A rename to a name another group has is the 409 it is on every other path (the
        # statement stopped at the members, before the name's unique index).
        name = result.doc.get("displayName")
        if isinstance(name, str) and name != row.doc.get("displayName"):
            taken = conn.execute(
                sa.select(groups_table.c.pk).where(
                    groups_table.c.display_name_lower == fold(name), groups_table.c.pk != row.pk
                )
            ).first()
            if taken is not None:
                raise uniqueness_error(GROUPS, result.doc) from None
        resolve_members(conn, [{"value": x} for x in adds])  # raises, naming the unknown ids
        return None  # they exist now: start over
    except conditional.NestedMembers:
        raise _UseTransaction from None


def _begin_mode(conn: sa.Connection, mode: str) -> None:
    """How the next SQLite transaction begins (read by the engine's "begin" hook)."""
    if conn.get_execution_options().get("sqlite_begin") != mode:
        conn.execution_options(sqlite_begin=mode)


def _not_its_own_member(gid: str, items: list[dict[str, Any]]) -> None:
    """A group in its own members would be its own ancestor: no directory has one."""
    if any(m["value"] == gid for m in items):
        raise InvalidValue(f"group '{gid}' cannot be a member of itself")


# A resource of a sorted search across types: (its sort value, its type, the resource).
_Item = tuple[Any, S.ResourceType, dict[str, Any]]


def _across_key(value: Any) -> tuple[bool, str, Any]:
    """Absent values last (first when reversed); values of different types never compared,
    but 3.5 is compared with 2 (a Decimal's values are ints and floats: all fractional ones
    sorted before all whole ones)."""
    if value is None:
        return (True, "", 0)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (False, "number", value)
    return (False, type(value).__name__, value)


def _lists(attributes: list[str] | None, excluded: list[str] | None) -> tuple[list[str], list[str]]:
    return attributes or [], excluded or []


def _wants_groups(attributes: list[str], excluded: list[str]) -> bool:
    """Whether a user's reply needs its groups: to return them, or for meta.version."""
    return _wants("groups", S.USER_SCHEMA, attributes, excluded) or _wants(
        "meta", S.USER_SCHEMA, attributes, excluded, False
    )


def _wants(
    attr: str, urn: str, attributes: list[str], excluded: list[str], core: bool = True
) -> bool:
    """Whether a reply holds ``attr`` of the resource type whose core schema is ``urn``;
    ``core``: it is a core attribute (groups, members), which that URN names too (``meta`` is
    not). Names may carry the URN (``urn:...:Group:members.value``: the members were not read
    for it). The other type's URN names nothing here: a root search excluding the Groups'
    core attributes left every user's groups out."""
    if not attributes and not excluded:  # the common case: every attribute
        return True
    name, own = attr.lower(), urn.lower()
    if attributes:
        return any(
            (core and a == own) or a == name or a.startswith(name + ".")
            for a in (_unqualified(p, own) for p in attributes)
        )
    return not any(
        (core and e == own) or e == name for e in (_unqualified(p, own) for p in excluded)
    )


def _unqualified(path: str, urn: str) -> str:
    """``path`` in lower case, without the core schema's URN ``urn`` (lower case) in front."""
    p = path.strip().lower()
    return p[len(urn) + 1 :] if p.startswith(urn + ":") else p


# Members a page of groups holds at most (beyond its first group): a page of 20 groups of
# 50,000 members was 138 MB, built in memory on the event loop (1 GB, a 2 s stall for every
# other request). Entra asks with excludedAttributes=members and never meets it.
PAGE_MEMBERS = 10_000


def _member_counts(conn: sa.Connection, pks: list[int]) -> dict[int, int]:
    q = (
        sa.select(members.c.group_pk, sa.func.count())
        .where(members.c.group_pk.in_(pks))
        .group_by(members.c.group_pk)
    )
    return {int(r[0]): int(r[1]) for r in conn.execute(q)}


def _within_page(sizes: list[int]) -> int:
    """How many of the first items, of ``sizes`` members each, a page holds: as many as add
    up to PAGE_MEMBERS, and one at least."""
    held = 0
    for n, size in enumerate(sizes):
        held += size
        if n and held > PAGE_MEMBERS:
            return n
    return len(sizes)


def _within_members(conn: sa.Connection, rows: list[Any]) -> list[Any]:
    """The first of ``rows`` whose members add up to PAGE_MEMBERS at most (one at least)."""
    sizes = _member_counts(conn, [r.pk for r in rows])
    return rows[: _within_page([sizes.get(r.pk, 0) for r in rows])]


def _members_of(conn: sa.Connection, pks: list[int]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {pk: [] for pk in pks}
    if not pks:
        return out
    q = (
        sa.select(members.c.group_pk, members.c.member_id, members.c.member_type)
        .where(members.c.group_pk.in_(pks))
        .order_by(members.c.group_pk, members.c.member_id)
    )
    for gpk, mid, mt in conn.execute(q):
        out[gpk].append({"value": mid, "type": mt})  # type: ignore[index]
    return out


_MEMBERS_KEYS = frozenset({"members", f"{S.GROUP_SCHEMA}:members".lower()})


def _members_in(body: Any, *, patch: bool) -> list[Any]:
    """The member objects a PUT sets or a PatchOp request adds or sets, read from the raw body
    without judging it (``Directory._lock_groups`` runs before the caller is authorised; the
    body is validated after): what it cannot read is left out."""
    if not isinstance(body, dict):
        return []
    if not patch:
        lists = [v for k, v in body.items() if k.lower() in _MEMBERS_KEYS and isinstance(v, list)]
        return [m for v in lists for m in v]
    ops = next((v for k, v in body.items() if k.lower() == "operations"), None)
    out: list[Any] = []
    for op in ops if isinstance(ops, list) else []:
        if not isinstance(op, dict):
            continue
        fields = {k.lower(): v for k, v in op.items()}
        path, value = fields.get("path"), fields.get("value")
        if isinstance(path, str) and path.strip().lower() in _MEMBERS_KEYS:
            out += value if isinstance(value, list) else [value]
        elif path is None and isinstance(value, dict):
            out += _members_in(value, patch=False)
    return out


def _split_members(body: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Group members go to their own table: take them out of a POST or PUT body, under their
    name or their URN-qualified name (RFC 7644 §3.10), validated as a PATCH's are."""
    rest = {k: v for k, v in body.items() if k.lower() not in _MEMBERS_KEYS}
    raws = [(k, v) for k, v in body.items() if k.lower() in _MEMBERS_KEYS]
    if not raws:
        return rest, []
    attr = S.GROUP_TYPE.core.attr["members"]
    lists = [[] if v is None else P.member_list(attr, v, "members") for _, v in raws]
    for (key, _), given in zip(raws[1:], lists[1:], strict=True):
        # Given alike under two keys, they are read once, as any attribute is (_Given).
        if _member_ids(given) != _member_ids(lists[0]):
            raise R.twice("members", raws[0][0], key)
    return rest, lists[0]


def _member_ids(items: list[dict[str, Any]]) -> set[str]:
    return {str(m.get("value")) for m in items}


def _sort_kind(rt: S.ResourceType, sort_by: str) -> tuple[str, str | None, bool]:
    """What a sort value of ``sort_by`` is: its type, format and case rule."""
    res = rt.resolve(sort_by)
    target = res.sub or res.attr
    if target.is_complex:
        target = target.sub.get("value", target)
    return target.type, target.value_format, target.case_exact


# A PATCH's record lists its first operations, and a path-less value's first keys (a value
# may hold every custom property by its full URN); how many more there were is said.
_OPS_LISTED = 50
_KEYS_LISTED = 50


def _op_summary(operations: list[tuple[str, str | None, Any]]) -> list[dict[str, Any]]:
    """What a PATCH's audit record says of each operation, as the PATCH read and applied it:
    its op and path, the attributes a path-less value names, and the value given to
    ``active`` (values are otherwise left out of the log; without this one a user disabled
    could not be told from one enabled)."""
    out = []
    for op, path, value in operations[:_OPS_LISTED]:
        item: dict[str, Any] = {"op": op, "path": path}
        if isinstance(path, str) and _is_active(path):
            if op != "remove":  # a remove's value is ignored (and unchecked: not recorded)
                item["active"] = value
        elif path is None and isinstance(value, dict):
            item["attributes"] = sorted(value)[:_KEYS_LISTED]
            if len(value) > _KEYS_LISTED:
                item["more_attributes"] = len(value) - _KEYS_LISTED
            core = _key(value, S.USER_SCHEMA.lower())
            for holder in (value, core if isinstance(core, dict) else {}):
                active = _key(holder, "active")
                if active is not None:
                    item["active"] = active
        out.append(item)
    return out


def _put_summary(old: dict[str, Any], new: dict[str, Any], named: str) -> dict[str, Any]:
    """What a PUT's audit record says: the attributes it changed (names, as a PATCH's record
    gives them; extensions by URN), and the new ``active`` and name (``named``: userName or
    displayName) when they changed (Okta disables users with PUT, whose record said nothing
    of it)."""
    # Every one: top-level names and extension URNs, so at most the schema's few dozen (a
    # cap of 20 left the last ones of a full user's PUT out without a word).
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    detail: dict[str, Any] = {"attributes": changed}
    for name in ("active", named):
        if name in changed:
            detail[name] = new.get(name)
    return detail


def _is_active(path: str) -> bool:
    """Whether a PATCH path names a user's ``active``, plain or with the core schema's URN."""
    low = path.strip().lower()
    return low == "active" or low == f"{S.USER_SCHEMA.lower()}:active"


def _key(obj: dict[str, Any], name: str) -> Any:
    """``obj``'s value for ``name`` (lower case) in any case."""
    return next((v for k, v in obj.items() if isinstance(k, str) and k.lower() == name), None)
