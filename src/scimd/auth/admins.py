"""Admin accounts of the work portal: argon2id password hashes, the first-start set-up link,
and the server's session-signing key.

The first start on an empty database creates no account with a guessable password: it prints a
one-time set-up link (a random token whose digest is stored, valid 24 hours) where the first
admin chooses a username and password. ``scimd admin create`` does the same from a script.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from scimd.scim.errors import InvalidValue, NotFound, Uniqueness
from scimd.scim.values import now_datetime
from scimd.store import audit as A
from scimd.store.tables import admin_sessions, admins, settings

MIN_PASSWORD = 10
SETUP_TTL = 24 * 3600
SESSION_SECONDS = 8 * 3600  # a portal session lasts this long from its sign-in
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
_hasher = PasswordHasher()


@functools.cache
def _dummy() -> str:
    """Verified against when the username does not exist, so a wrong username costs the same
    time. Made on first use: hashing costs ~0.2 s, which every command and server start paid."""
    return _hasher.hash("not a real password")


def prepare() -> None:
    """Make the dummy digest ahead of the first sign-in (a server calls it off its loop)."""
    _dummy()


@dataclass(frozen=True, slots=True)
class Admin:
    pk: int
    username: str
    session_epoch: int

    def actor(self, request_id: str | None = None) -> A.Actor:
        return A.Actor("admin", self.username, self.username, request_id)


def _check(username: str, password: str) -> None:
    if not _USERNAME.fullmatch(username):  # match()'s $ also took a trailing newline
        raise InvalidValue(
            "a username is 1-128 ASCII letters (A-Z, a-z), digits, '.', '_', '@' or '-',"
            " starting with a letter"
            " or digit"
        )
    if len(password) < MIN_PASSWORD:
        raise InvalidValue(f"choose a password of at least {MIN_PASSWORD} characters")


def count(conn: sa.Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(admins)).scalar_one())


def create(conn: sa.Connection, username: str, password: str, actor: A.Actor) -> Admin:
    _check(username, password)
    # The set-up links' row first, as the set-up page takes it: an admin made from the
    # command line while the page made one of the same name deadlocked with it.
    _locked(conn, "admin_setup")
    exists = conn.execute(
        sa.select(admins.c.username).where(admins.c.username_lower == username.lower())
    ).first()
    if exists:  # named as it exists ('alice' for "ALICE")
        raise Uniqueness(f"an admin named '{exists[0]}' already exists")
    try:
        with conn.begin_nested():  # one racing create wins; the other is told it exists
            pk: int = conn.execute(
                admins.insert()
                .values(
                    username=username,
                    username_lower=username.lower(),
                    password_hash=_hasher.hash(password),
                    created=now_datetime(),
                    session_epoch=0,
                )
                .returning(admins.c.pk)
            ).scalar_one()
    except sa.exc.IntegrityError:
        raise Uniqueness(f"an admin named '{username}' already exists") from None
    _set(conn, "admin_setup", "")  # an account exists: the set-up link is spent
    A.record(conn, actor, "admin.create", "Admin", username, None)
    return Admin(int(pk), username, 0)


def reset_password(conn: sa.Connection, username: str, password: str, actor: A.Actor) -> None:
    """Set a new password and end every session of that admin."""
    _check(username, password)
    row = conn.execute(
        sa.select(admins.c.pk).where(admins.c.username_lower == username.lower())
    ).first()
    if row is None:
        raise NotFound(f"no admin named '{username}'")
    conn.execute(
        admins.update()
        .where(admins.c.pk == row.pk)
        .values(password_hash=_hasher.hash(password), session_epoch=admins.c.session_epoch + 1)
    )
    conn.execute(admin_sessions.delete().where(admin_sessions.c.admin_pk == row.pk))
    A.record(conn, actor, "admin.reset_password", "Admin", username, None)


def list_admins(conn: sa.Connection) -> list[dict[str, Any]]:
    """Every admin's name, creation and last sign-in (never a hash)."""
    rows = conn.execute(
        sa.select(admins.c.username, admins.c.created, admins.c.last_login).order_by(
            admins.c.username_lower
        )
    )
    return [dict(r._mapping) for r in rows]


def delete(conn: sa.Connection, username: str, actor: A.Actor) -> int:
    """Delete an admin (its sessions end with it); returns how many admins are left."""
    row = conn.execute(
        sa.select(admins.c.pk, admins.c.username).where(admins.c.username_lower == username.lower())
    ).first()
    if row is None:
        raise NotFound(f"no admin named '{username}'")
    conn.execute(admin_sessions.delete().where(admin_sessions.c.admin_pk == row.pk))
    conn.execute(admins.delete().where(admins.c.pk == row.pk))
    A.record(conn, actor, "admin.delete", "Admin", row.username, None)
    return count(conn)


def end_sessions(conn: sa.Connection, pk: int) -> None:
    """End every session of an admin (a copy of a cookie must not outlive a sign-out)."""
    conn.execute(
        admins.update().where(admins.c.pk == pk).values(session_epoch=admins.c.session_epoch + 1)
    )
    conn.execute(admin_sessions.delete().where(admin_sessions.c.admin_pk == pk))


def _digest(secret: str) -> str:
    """What is stored of a session id or a set-up token: its SHA-256, never the value."""
    return hashlib.sha256(secret.encode()).hexdigest()


def start_session(conn: sa.Connection, pk: int) -> str:
    """A new session id for the admin's cookie; only its digest is stored, so a cookie cannot
    be made from what the database holds (its signing key is there too)."""
    now = int(time.time())
    conn.execute(
        admin_sessions.delete().where(
            admin_sessions.c.admin_pk == pk, admin_sessions.c.created <= now - SESSION_SECONDS
        )
    )
    sid = secrets.token_urlsafe(32)
    conn.execute(admin_sessions.insert().values(admin_pk=pk, digest=_digest(sid), created=now))
    return sid


def session_admin(conn: sa.Connection, pk: int, sid: str) -> Admin | None:
    """The admin of a live session ``sid`` of admin ``pk``, else None."""
    row = conn.execute(
        sa.select(admins)
        .join(admin_sessions, admin_sessions.c.admin_pk == admins.c.pk)
        .where(
            admins.c.pk == pk,
            admin_sessions.c.digest == _digest(sid),
            admin_sessions.c.created > int(time.time()) - SESSION_SECONDS,
        )
    ).first()
    return Admin(row.pk, row.username, row.session_epoch) if row is not None else None


def verify(conn: sa.Connection, username: str, password: str) -> Admin | None:
    found = lookup(conn, username)
    if not password_matches(found, password) or found is None:  # (mypy: found is set)
        return None
    record_login(conn, found.admin.pk)
    return found.admin


@dataclass(frozen=True, slots=True)
class Candidate:
    """An admin being signed in, with the digest the password is checked against."""

    admin: Admin
    password_hash: str


def lookup(conn: sa.Connection, username: str) -> Candidate | None:
    row = conn.execute(
        sa.select(admins).where(admins.c.username_lower == username.strip().lower())
    ).first()
    if row is None:
        return None
    return Candidate(Admin(row.pk, row.username, row.session_epoch), row.password_hash)


def password_matches(found: Candidate | None, password: str) -> bool:
    """The password check (argon2, ~0.2 s), outside any transaction: inside a write one it
    held SQLite's write lock, so a burst of sign-ins stalled every SCIM write. An unknown
    account is checked against a dummy digest, so it takes as long."""
    try:
        _hasher.verify(found.password_hash if found is not None else _dummy(), password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return found is not None


def record_login(conn: sa.Connection, pk: int) -> None:
    conn.execute(admins.update().where(admins.c.pk == pk).values(last_login=now_datetime()))


def get(conn: sa.Connection, pk: int) -> Admin | None:
    row = conn.execute(sa.select(admins).where(admins.c.pk == pk)).first()
    return Admin(row.pk, row.username, row.session_epoch) if row is not None else None


# -- first start ------------------------------------------------------------------------------


def _get(conn: sa.Connection, key: str) -> str | None:
    v = conn.execute(sa.select(settings.c.value).where(settings.c.key == key)).scalar_one_or_none()
    return str(v) if v is not None else None


def _set(conn: sa.Connection, key: str, value: str) -> None:
    if conn.execute(settings.update().where(settings.c.key == key).values(value=value)).rowcount:
        return
    conn.execute(settings.insert().values(key=key, value=value))


def _locked(conn: sa.Connection, key: str) -> str:
    """The value of ``key`` ("" when unset), its row locked until the transaction ends: the
    read-then-write of servers starting together on PostgreSQL made one fail on the
    insert (a unique violation), or overwrite the other's session key or set-up link."""
    insert: Any = sqlite_insert if conn.dialect.name == "sqlite" else postgresql_insert
    conn.execute(
        insert(settings)
        .values(key=key, value="")
        .on_conflict_do_nothing(index_elements=[settings.c.key])
    )
    query = sa.select(settings.c.value).where(settings.c.key == key).with_for_update()
    return str(conn.execute(query).scalar_one() or "")


def _setup_tokens(conn: sa.Connection, text: str | None = None) -> list[tuple[str, int]]:
    """The set-up tokens' digests that have not expired, with their expiry."""
    out = []
    text = _get(conn, "admin_setup") if text is None else text
    for item in (text or "").split():
        digest, _, expires = item.partition(":")
        if digest and expires.isdigit() and int(expires) >= time.time():
            out.append((digest, int(expires)))
    return out


def new_setup_token(conn: sa.Connection) -> str | None:
    """A fresh one-time set-up token when no admin exists yet (else None).

    The links printed before stay valid until they expire: a restart, or a second process
    on the same database, used to cancel the link the admin had just been given."""
    if count(conn):
        return None
    token = secrets.token_urlsafe(24)
    digest = _digest(token)
    kept = _setup_tokens(conn, _locked(conn, "admin_setup"))[-9:]  # at most ten links at once
    items = [f"{d}:{e}" for d, e in kept] + [f"{digest}:{int(time.time()) + SETUP_TTL}"]
    _set(conn, "admin_setup", " ".join(items))
    return token


def setup_token_valid(conn: sa.Connection, token: str) -> bool:
    wanted = _digest(token)
    found = False
    for digest, _ in _setup_tokens(conn):  # each compared in constant time
        found |= hmac.compare_digest(digest, wanted)
    return found


class SetupLinkSpent(InvalidValue):
    """The set-up link cannot be used (as opposed to a username or password to correct)."""


def complete_setup(
    conn: sa.Connection, token: str, username: str, password: str, request_id: str | None = None
) -> Admin:
    """The first admin, from a set-up link. The links' row is locked first: two browsers
    posting one link together (two processes on PostgreSQL) each saw no admin and a valid
    link, and both accounts were made; the second now waits, then finds the first."""
    _locked(conn, "admin_setup")
    if count(conn):
        # Restarting prints no link once an admin exists: the advice misled.
        raise SetupLinkSpent("an administrator account exists already: sign in instead")
    if not setup_token_valid(conn, token):
        raise SetupLinkSpent(
            "this set-up link is no longer valid; restart the server for a new one"
        )
    made = create(conn, username, password, A.Actor("system", None, "first start", request_id))
    record_login(conn, made.pk)  # the link signs the new admin in: `admin list` says so
    return made


def session_secret(conn: sa.Connection) -> str:
    """The key that signs portal session cookies, shared by every server process."""
    value = _locked(conn, "session_secret")
    if not value:
        value = secrets.token_hex(32)
        _set(conn, "session_secret", value)
    return value
