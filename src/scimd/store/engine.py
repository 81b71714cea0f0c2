"""Engine construction: one place for dialect set-up (SQLite pragmas, JSON codec, functions)."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from scimd.scim.values import fold, instant

# The automatic checkpoint of request connections, in pages. ``store.checkpoint.Checkpointer``
# copies the log back into the database file in the background long before it gets this large;
# this is the bound on the log (about 40 MB at the default 4 KB page) if the background thread
# falls behind or none runs. SQLite's default, 1,000 pages, made every ~10th 100-member group
# PATCH pay for a checkpoint of the others' pages.
WAL_AUTOCHECKPOINT_PAGES = 10_000
# Page cache per connection, in KiB (SQLite's default is 2 MiB; it is filled as pages are
# read). At 100,000 users (a 150 MB file) random lookups missed the default cache: over HTTP,
# filter by userName went from 8,800 to 6,900 req/s as the run went on, and stayed at
# 8,800-9,800 with 64 MiB; GET by id 9,600 -> 11,200-12,100 (c=8).
PAGE_CACHE_KIB = 65_536
# Reads of the database file through a memory map, up to this size (SQLite caps it at its
# compile-time maximum, 2 GiB in common builds): a page that is not in the connection's cache
# is then read from the OS page cache without a read() call and a copy. At 100,000 users (a
# file larger than the page cache) over HTTP, alternating runs: filter by userName 8,896-9,183
# -> 9,358-9,818 req/s and GET by id 11,338-11,676 -> 12,300-12,919 at c=8 (+1-10% at c=32).
# Written pages still go through the WAL.
MMAP_SIZE_BYTES = 8 * 1024**3
# After a checkpoint that starts the log over, SQLite truncates a larger -wal file to this size.
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
_TEMP_IN_MEMORY = "scimd_temp_store_memory"
# A SQLite connection waits ``database_timeout`` for another process's write lock before
# "database is locked" (``busy_timeout_ms``). The server's event loop never waits on it: its
# writes begin with IMMEDIATE_NOWAIT and wait asynchronously (``web.batching.GroupCommit``).
# ``sqlite_begin`` mode: BEGIN IMMEDIATE that fails at once if another process holds the lock.
IMMEDIATE_NOWAIT = "IMMEDIATE NOWAIT"


def json_text(value: Any) -> str:
    """JSON parameters as text, encoded by orjson (both engines, sync and async)."""
    return orjson.dumps(value).decode()


def _py_lower(value: Any) -> Any:
    """SQLite's lower() folds ASCII only; filters fold case as ``values.fold`` does."""
    return fold(value) if isinstance(value, str) else value


def _foreign(cur: sqlite3.Cursor) -> bool:
    """Whether a SQLite database holds tables but not scimd's (its schema version table)."""
    names = {row[0] for row in cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return bool(names) and "alembic_version" not in names


def busy_timeout_ms(timeout: float) -> int:
    """SQLite's busy timeout for ``database_timeout`` seconds (0: as good as forever)."""
    return round(timeout * 1000) if timeout > 0 else 2**31 - 1


def create_engine(
    url: str, *, echo: bool = False, timeout: float = 30, lock_timeout: float = 0
) -> sa.Engine:
    """Create an engine for ``url`` (``sqlite:///file.db`` or ``postgresql+psycopg://...``).

    ``timeout`` (``database_timeout``, 0: forever) bounds how long opening a PostgreSQL
    connection waits, and how long a SQLite connection waits for another process's write lock:
    a script's command should not wait 30 s to learn that a backup holds the file.
    ``lock_timeout`` (seconds, 0: none) bounds a PostgreSQL statement's wait for a lock, for
    the command line (the server bounds whole calls itself).
    """
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        busy_ms = busy_timeout_ms(timeout)
        if u.database and u.database != ":memory:":
            folder = Path(u.database).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:  # said with the path, by the command line
                raise OSError(
                    e.errno, f"cannot make the database's directory ({e.strerror})", e.filename
                ) from e
        engine = sa.create_engine(
            u,
            echo=echo,
            json_serializer=json_text,
            json_deserializer=orjson.loads,
            connect_args={"check_same_thread": False, "timeout": busy_ms / 1000},
            hide_parameters=True,  # a failed statement's row is not written to the log
        )

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event issue BEGIN so writes can take the lock up front.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            if cur.execute("PRAGMA journal_mode").fetchone()[0] != "wal" and not _foreign(cur):
                # WAL is written into the file and stays: not for a database of another
                # application, which scimd refuses (it may live where WAL cannot work).
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            cur.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
            cur.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            cur.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
            cur.execute(f"PRAGMA mmap_size={MMAP_SIZE_BYTES}")
            cur.close()
            dbapi_conn.create_function("py_lower", 1, _py_lower, deterministic=True)
            # dateTime properties are stored as sent; filters and sorting compare instants.
            dbapi_conn.create_function("scim_instant", 1, instant, deterministic=True)

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            # IMMEDIATE takes the write lock at BEGIN: no deadlock when two processes upgrade
            # a read transaction to a write at the same time.
            # Straight on the driver: exec_driver_sql costs ~15 µs more, on every write.
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            driver = conn.connection.driver_connection
            if mode.startswith("IMMEDIATE") and _TEMP_IN_MEMORY not in conn.connection.info:
                # A write connection keeps its statement journal in memory. Inside a savepoint
                # (a write in a group commit) SQLite keeps a copy of every page the write
                # changes, and past 64 KB it spilled them to a temporary file: a 100-member
                # group PATCH (~110 pages) took ~650 µs instead of ~300 µs in its statements
                # (measured). Reads, whose sorts can be as large as a table, keep the default.
                driver.execute("PRAGMA temp_store=MEMORY")  # type: ignore[union-attr]
                conn.connection.info[_TEMP_IN_MEMORY] = True
            if driver.in_transaction:  # type: ignore[union-attr]
                # Left open by a COMMIT that failed (SQLite keeps that transaction; SQLAlchemy
                # sends no ROLLBACK for it): without this, every later BEGIN on the connection
                # failed until a restart.
                driver.rollback()  # type: ignore[union-attr]
            nowait = mode == IMMEDIATE_NOWAIT
            if nowait:  # fail at once when another process writes (the caller waits, async)
                driver.execute("PRAGMA busy_timeout=0")  # type: ignore[union-attr]
                mode = "IMMEDIATE"
            try:
                driver.execute(f"BEGIN {mode}")  # type: ignore[union-attr]
            except sqlite3.OperationalError as e:
                # "database is locked" past the busy timeout: raised here, outside SQLAlchemy's
                # statement handling, so wrap it as SQLAlchemy would for callers to handle (a
                # 503, one line from the command line) instead of a traceback and a 500.
                # SQLAlchemy resets its "in begin" flag only after its own BEGIN: reset it
                # here, or the connection would stop beginning transactions by itself.
                if hasattr(conn, "_Connection__in_begin"):
                    conn._Connection__in_begin = False
                raise sa.exc.OperationalError(f"BEGIN {mode}", None, e) from e
            finally:
                if nowait:
                    driver.execute(f"PRAGMA busy_timeout={busy_ms}")  # type: ignore[union-attr]

        return engine
    return sa.create_engine(
        u,
        echo=echo,
        json_serializer=json_text,
        json_deserializer=orjson.loads,
        # A database error's message lists the statement's parameters: a user's row, its
        # emails and part of a password's digest went to the log with every outage.
        hide_parameters=True,
        # Connections are held per worker thread by the directory; recycle them hourly instead
        # of pinging on every checkout (a ping is a network round trip per request).
        pool_size=10,
        max_overflow=40,
        pool_recycle=3600,
        connect_args=postgres_connect_args(u, timeout, lock_timeout),
    )


def postgres_connect_args(
    url: str | sa.URL, timeout: float = 0, lock_timeout: float = 0
) -> dict[str, Any]:
    """Connection options for PostgreSQL: JIT compilation off, before the URL's own options;
    with ``timeout``, a bound on opening a connection (libpq's ``connect_timeout``, unless the
    URL sets one): a silent server otherwise holds the connect forever.

    PostgreSQL JIT-compiles a statement whose estimated cost passes ``jit_above_cost``, which
    stale statistics make easy: right after a few hundred thousand memberships were added
    (before autovacuum's ANALYZE), a page of 100 users with their groups spent ~7 ms compiling
    for ~1 ms of work, every time (measured: 9.6-11.7 ms of server CPU per page instead of
    about 1). Every statement here is short; compiling never pays. Options in the URL come
    after, so ``?options=-c jit=on`` still turns it back on.
    """
    query = make_url(url).query
    own = query.get("options")
    extra = " ".join(own) if isinstance(own, tuple) else (own or "")
    # UTF-8 on the wire whatever the server's default: a database in SQL_ASCII (initdb under
    # LANG=C) made psycopg return bytes, and scimd failed with a traceback.
    if lock_timeout > 0:  # a command behind another session's lock waited past its timeout
        extra = f"-c lock_timeout={round(lock_timeout * 1000)} {extra}"
    args: dict[str, Any] = {"options": f"-c jit=off {extra}".strip(), "client_encoding": "utf8"}
    if timeout > 0 and "connect_timeout" not in query:
        args["connect_timeout"] = max(2, round(timeout))  # libpq's smallest
    return args


# What a request that met a database it could not use raises: SQLAlchemy's wrappers, and
# SQLite's own error from the statements run on the driver directly (member changes), which
# was a 500 on a full disk.
UNAVAILABLE: tuple[type[Exception], ...] = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sqlite3.OperationalError,
)


class DatabaseFileGone(Exception):
    """The SQLite file the server opened was removed or replaced while it ran. The open
    connections write on into the deleted file, whose changes no one will read again: writes
    were answered 201 and lost, and a new connection made an empty file at the path."""

    def __init__(self, path: str) -> None:
        super().__init__(f"the database file {path} was removed or replaced while the server ran")


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` says the database cannot serve requests now (a request meeting it is
    a 503, not a 500): unreachable, locked, full, read-only, or damaged; or its connection
    ended (PostgreSQL's idle_in_transaction_session_timeout and transaction_timeout end the
    session with an error of class 25, which psycopg raises as an InternalError: a 500)."""
    return (
        isinstance(error, (*UNAVAILABLE, DatabaseFileGone))
        or is_read_only(error)
        or is_damaged(error)
        or connection_ended(error)
        or _sqlstate(error) in ("25P03", "25P04")
    )


def _sqlstate(error: BaseException) -> str | None:
    state = getattr(getattr(error, "orig", error), "sqlstate", None)
    return state if isinstance(state, str) else None


def is_disconnect(error: BaseException) -> bool:
    """Whether ``error`` says the connection itself ended (PostgreSQL restarted, or its
    session was terminated), so that the same call on a new connection may succeed: SQLSTATE
    classes 08 and 57P, or a connection-level failure, which psycopg gives no SQLSTATE."""
    if isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated:
        return True
    if not isinstance(error, sa.exc.OperationalError):
        return False
    state = getattr(error.orig, "sqlstate", None)
    return state is None or state.startswith(("08", "57P"))


def connection_ended(error: BaseException) -> bool:
    """Whether a network database ended the connection under ``error`` (SQLAlchemy saw it
    invalidated, or PostgreSQL said so: SQLSTATE class 08 or 57P), so that the next call, on
    another connection, should work. Unlike ``is_disconnect``, not SQLite's errors (which
    carry no SQLSTATE) nor a statement cut off by the server's own timeout."""
    if isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated:
        return True
    state = _sqlstate(error)
    return state is not None and state.startswith(("08", "57P"))


def is_read_only(error: BaseException) -> bool:
    """PostgreSQL in read-only mode (SQLSTATE 25006): what managed services switch a database
    to when its storage is full, and a hot standby answers."""
    return _sqlstate(error) == "25006"


def is_damaged(error: BaseException) -> bool:
    """A SQLite file that is damaged ("database disk image is malformed")."""
    return _sqlite_error(
        error, sqlite3.DatabaseError, (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB), "malformed"
    )


def is_full(error: BaseException) -> bool:
    """Whether ``error`` is SQLite's "database or disk is full", or PostgreSQL's disk_full
    (SQLSTATE 53100: "could not extend file ... No space left on device")."""
    return _sqlstate(error) == "53100" or _sqlite_error(
        error, sqlite3.OperationalError, (sqlite3.SQLITE_FULL,), "is full"
    )


def is_busy(error: BaseException) -> bool:
    """Whether ``error`` is SQLite's "database is locked": another process holds the write
    lock (a second server on the file, a command, a backup); or PostgreSQL's lock_timeout
    (SQLSTATE 55P03), which the command line sets."""
    return _sqlstate(error) == "55P03" or _sqlite_error(
        error, sqlite3.OperationalError, (sqlite3.SQLITE_BUSY,), "database is locked"
    )


def _sqlite_error(
    error: BaseException, kind: type[sqlite3.Error], codes: tuple[int, ...], text: str
) -> bool:
    """Whether ``error`` (or the driver error SQLAlchemy wrapped in it) is SQLite's ``kind``
    with one of ``codes``, or says ``text``."""
    orig = getattr(error, "orig", error)
    return isinstance(orig, kind) and (
        getattr(orig, "sqlite_errorcode", None) in codes or text in str(orig)
    )


def is_sqlite(engine: sa.Engine) -> bool:
    return engine.dialect.name == "sqlite"


@contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction for a write outside the server (the command line, start-up).

    On SQLite it takes the write lock at BEGIN, waiting for a busy server (``busy_timeout``):
    a transaction that reads first and then writes cannot wait for it, and fails at once with
    "database is locked" when a server process committed in between (SQLite's snapshot rule),
    as ``scimd apps revoke`` did while Entra was provisioning.
    """
    with engine.connect() as conn:
        if engine.dialect.name != "sqlite":
            with conn.begin():
                yield conn
            return
        # The lock is waited for here, in Python, between tries that fail at once: SQLite's
        # busy handler sleeps in C, where Ctrl-C could not stop a command waiting behind a
        # server or a backup (with database_timeout 0, ever).
        driver = conn.connection.driver_connection
        assert driver is not None
        deadline = time.monotonic() + driver.execute("PRAGMA busy_timeout").fetchone()[0] / 1000
        conn.execution_options(sqlite_begin=IMMEDIATE_NOWAIT)
        pause = 0.001
        while True:
            try:
                tx = conn.begin()
                break
            except sa.exc.OperationalError as e:
                if not is_busy(e) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        with tx:
            yield conn


def file_identity(engine: sa.Engine) -> tuple[int, int] | None:
    """The device and inode of a SQLite database file (None for another database, or no file):
    connections opened after the file was deleted made a new, empty one at its path."""
    path = engine.url.database if engine.dialect.name == "sqlite" else None
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_dev, st.st_ino)
