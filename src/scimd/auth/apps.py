"""OAuth 2 applications, their client secrets, and bearer-token verification.

A secret is 256 bits from ``secrets``; only its SHA-256 digest is stored (a fast hash is right for
high-entropy random strings: there is nothing to brute-force). The secret of a "Bearer token"
application is itself the long-lived bearer token Entra ID is given; a "Client credentials"
application exchanges it at the token endpoint for short-lived access tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from scimd.scim.errors import InvalidValue, NotFound
from scimd.scim.values import now_datetime
from scimd.store import audit as A
from scimd.store import versions
from scimd.store.prepared import StatementCache, load_json
from scimd.store.tables import access_tokens, applications, client_secrets

SCOPES = ("API", "USER SYNC")
SCIM_SCOPE = "USER SYNC"
GRANTS = {"bearer": "Bearer token", "client_credentials": "Client credentials"}


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    """256 random bits, URL-safe; never starting with "-" so it is safe as a CLI argument."""
    while True:
        s = secrets.token_urlsafe(32)
        if not s.startswith("-"):
            return s


def canonical_grant(grant: str) -> str:
    low = grant.strip().lower().replace("-", "_").replace(" ", "_")
    aliases = {
        "bearer": "bearer",
        "bearer_token": "bearer",
        "client_credentials": "client_credentials",
    }
    if low not in aliases:
        raise InvalidValue(f"unknown grant type '{grant}': use 'bearer' or 'client_credentials'")
    return aliases[low]


def canonical_scopes(scopes: list[str]) -> list[str]:
    out = []
    for s in scopes:
        match = next((k for k in SCOPES if k.lower() == s.strip().lower()), None)
        if match is None:
            raise InvalidValue(f"unknown scope '{s}': allowed scopes are {', '.join(SCOPES)}")
        if match not in out:
            out.append(match)
    if not out:
        raise InvalidValue(f"choose at least one scope ({', '.join(SCOPES)})")
    return out


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of a request."""

    app_pk: int
    client_id: str
    name: str
    scopes: tuple[str, ...]
    secret_pk: int | None = None  # the client secret used (or that obtained the token)

    def actor(self, request_id: str | None = None) -> A.Actor:
        return A.Actor("app", self.client_id, self.name, request_id)


MAX_LIFETIME = 366 * 24 * 3600
# Access tokens of a Client credentials application, unless it says otherwise: short-lived by
# default (RFC 9700 §2.2.2; Microsoft's gallery validation expects 60-360 minutes).
DEFAULT_LIFETIME = 3600


# Names are shown in lists, titles and every audit record of the application's changes.
MAX_NAME = 128


# Zero-width (non-)joiners: formatting characters that Persian and Indic names need.
_JOINERS = frozenset("\u200c\u200d")
# pg_advisory_xact_lock key of application creation ("apps" in ASCII).
_CREATE_LOCK = 0x61707073


def _key(name: str) -> str:
    """What two names that read alike share: NFKC (a precomposed é and an e with a combining
    accent were two names) and case folding."""
    return unicodedata.normalize("NFKC", name).casefold()


def _checked_name(conn: sa.Connection, name: str) -> str:
    """The name to store, or a 400 that says what to change. A 5,000-character name filled
    the portal's list; a right-to-left override reversed the text after it wherever the name
    was shown; two applications of one name were one in the audit log's filter."""
    name = name.strip()
    if not name:
        raise InvalidValue("an application needs a name")
    if len(name) > MAX_NAME:
        raise InvalidValue(f"an application's name is at most {MAX_NAME} characters")
    odd = next(
        (
            c
            for c in name
            if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") and c not in _JOINERS
        ),
        None,
    )
    if odd is not None:
        raise InvalidValue(
            f"an application's name cannot hold control or formatting characters (U+{ord(odd):04X})"
        )
    folded = _key(name)
    if conn.dialect.name == "postgresql":
        # Two admins adding one name at once both passed the check (READ COMMITTED); SQLite's
        # write transaction holds its lock from BEGIN already.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CREATE_LOCK})
    rows = conn.execute(sa.select(applications.c.client_id, applications.c.name))
    taken = next(((cid, other) for cid, other in rows if _key(str(other)) == folded), None)
    if taken is not None:  # a few applications: compared here, in Python's case folding
        # The name as it exists ('Entra ID' for "ENTRA id"): the one to look for in the list.
        raise InvalidValue(
            f"an application named '{taken[1]}' exists (client id {taken[0]}): rotate its"
            " secret to get a new one, or choose another name",
            status=409,
        )
    return name


def create_app(
    conn: sa.Connection,
    name: str,
    grant: str,
    scopes: list[str],
    actor: A.Actor,
    lifetime: int | None = None,
) -> tuple[dict[str, Any], str]:
    """Create an application; returns its row and the client secret (shown once).
    ``lifetime`` None: a Bearer token application's secret never expires (it is the
    token), a Client credentials application's access tokens last an hour."""
    name = _checked_name(conn, name)
    if lifetime is None:
        lifetime = DEFAULT_LIFETIME if canonical_grant(grant) == "client_credentials" else 0
    if not 0 <= lifetime <= MAX_LIFETIME:
        raise InvalidValue(
            f"token lifetime is seconds from 0 to {MAX_LIFETIME} (a year; 0 = never expires)"
        )
    g = canonical_grant(grant)
    if g == "bearer" and lifetime:
        # It would be shown on the application and never applied: the secret is the token.
        raise InvalidValue(
            "a Bearer token application's secret is itself the token and does not expire:"
            " leave token lifetime at 0 (rotate or revoke the secret instead); lifetimes"
            " apply to client credentials access tokens"
        )
    sc = canonical_scopes(scopes)
    client_id = str(uuid.uuid4())
    inserted: Any = conn.execute(
        applications.insert().values(
            client_id=client_id,
            name=name,
            grant_type=g,
            scopes=sc,
            token_lifetime=lifetime,
            enabled=True,
            created=now_datetime(),
        )
    ).inserted_primary_key
    pk = int(inserted[0])
    secret = _add_secret(conn, pk)
    A.record(
        conn,
        actor,
        "app.create",
        "Application",
        client_id,
        {"name": name, "grant": g, "scopes": sc},
    )
    return get_app(conn, client_id), secret


def _add_secret(conn: sa.Connection, app_pk: int) -> str:
    secret = new_secret()
    conn.execute(
        client_secrets.insert().values(
            app_pk=app_pk, digest=digest(secret), hint=secret[:6], created=now_datetime()
        )
    )
    return secret


def secret_id(conn: sa.Connection, secret: str) -> int:
    """The id of a client secret (what ``revoke_secret`` takes), found by its digest."""
    query = sa.select(client_secrets.c.pk).where(client_secrets.c.digest == digest(secret))
    return int(conn.execute(query).scalar_one())


def _app_row(conn: sa.Connection, client_id: str, lock: bool = False) -> Any:
    """The application's row; ``lock`` for a write: locked first, before its secrets and
    tokens, in the order the token endpoint takes them (PostgreSQL). A revoke or delete that
    changed the secrets first deadlocked with token requests (5 of 6 revokes under load)."""
    query = sa.select(applications).where(applications.c.client_id == client_id)
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        raise NotFound(f"no application with client id '{client_id}'")
    return row


def get_app(conn: sa.Connection, client_id: str) -> dict[str, Any]:
    row = _app_row(conn, client_id)
    secrets_ = conn.execute(
        sa.select(client_secrets)
        .where(client_secrets.c.app_pk == row.pk)
        .order_by(client_secrets.c.pk)
    )
    d = dict(row._mapping)
    d["secrets"] = [
        {
            "id": s.pk,
            "hint": s.hint + "…",
            "created": s.created,
            "revoked": s.revoked,
            "last_used": s.last_used,
        }
        for s in secrets_
    ]
    d.pop("pk")
    return d


def list_apps(conn: sa.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(applications.c.client_id).order_by(applications.c.pk))
    return [get_app(conn, str(cid)) for (cid,) in rows]


def rotate_secret(conn: sa.Connection, client_id: str, actor: A.Actor) -> str:
    """Add a new secret; the old ones stay valid until revoked (switch clients without downtime)."""
    row = _app_row(conn, client_id, lock=True)
    secret = _add_secret(conn, row.pk)
    A.record(conn, actor, "app.rotate", "Application", client_id, {"name": row.name})
    return secret


def revoke_secret(conn: sa.Connection, client_id: str, secret_id: int, actor: A.Actor) -> None:
    """Revoke one secret (after rotation, once every client uses the new one) and the access
    tokens it obtained: a revoked secret (say, a leaked one) must not live on in its tokens,
    while clients already on the new secret keep theirs. Tokens issued before the secret was
    recorded with them (migration 0005) end too."""
    row = _app_row(conn, client_id, lock=True)
    if not 0 < secret_id < 2**31:  # no such key (PostgreSQL would refuse the number itself)
        raise NotFound(f"application '{client_id}' has no active secret {secret_id}")
    done = conn.execute(
        client_secrets.update()
        .where(
            client_secrets.c.pk == secret_id,
            client_secrets.c.app_pk == row.pk,
            client_secrets.c.revoked.is_(None),
        )
        .values(revoked=now_datetime())
    ).rowcount
    if not done:
        raise NotFound(f"application '{client_id}' has no active secret {secret_id}")
    conn.execute(
        access_tokens.delete().where(
            access_tokens.c.app_pk == row.pk,
            sa.or_(access_tokens.c.secret_pk == secret_id, access_tokens.c.secret_pk.is_(None)),
        )
    )
    versions.bump(conn, versions.AUTH)  # cached verifications end now
    detail = {"name": row.name, "secret": secret_id}
    A.record(conn, actor, "app.revoke_secret", "Application", client_id, detail)


def touch_last_used(conn: sa.Connection, app_pk: int, secret_pk: int | None = None) -> None:
    """When the application, and the secret it used, were last used."""
    now = now_datetime()
    conn.execute(applications.update().where(applications.c.pk == app_pk).values(last_used=now))
    if secret_pk is not None:
        conn.execute(
            client_secrets.update().where(client_secrets.c.pk == secret_pk).values(last_used=now)
        )


def revoke_app(conn: sa.Connection, client_id: str, actor: A.Actor) -> None:
    """Revoke every secret and access token of the application and disable it."""
    row = _app_row(conn, client_id, lock=True)
    now = now_datetime()
    secrets = conn.execute(
        client_secrets.update()
        .where(client_secrets.c.app_pk == row.pk, client_secrets.c.revoked.is_(None))
        .values(revoked=now)
    ).rowcount
    tokens = conn.execute(access_tokens.delete().where(access_tokens.c.app_pk == row.pk)).rowcount
    if not (secrets or tokens or row.enabled):
        return  # revoked already: no change to record, no cached verification to end
    conn.execute(applications.update().where(applications.c.pk == row.pk).values(enabled=False))
    versions.bump(conn, versions.AUTH)  # cached verifications end now
    A.record(conn, actor, "app.revoke", "Application", client_id, {"name": row.name})


def set_enabled(conn: sa.Connection, client_id: str, enabled: bool, actor: A.Actor) -> None:
    """Disabling stops every secret at once and discards issued access tokens for good:
    enabling again brings none of them back (clients ask for new ones)."""
    row = _app_row(conn, client_id, lock=True)
    if bool(row.enabled) == enabled:
        return  # as asked already: no change to record (each ended every cached verification)
    conn.execute(applications.update().where(applications.c.pk == row.pk).values(enabled=enabled))
    # Enabling too: none issued before the disable may come back with it.
    conn.execute(access_tokens.delete().where(access_tokens.c.app_pk == row.pk))
    versions.bump(conn, versions.AUTH)  # cached verifications end now
    operation = "app.enable" if enabled else "app.disable"
    A.record(conn, actor, operation, "Application", client_id, {"name": row.name})


def delete_app(conn: sa.Connection, client_id: str, actor: A.Actor) -> None:
    row = _app_row(conn, client_id, lock=True)
    conn.execute(access_tokens.delete().where(access_tokens.c.app_pk == row.pk))
    conn.execute(client_secrets.delete().where(client_secrets.c.app_pk == row.pk))
    conn.execute(applications.delete().where(applications.c.pk == row.pk))
    versions.bump(conn, versions.AUTH)  # cached verifications end now
    A.record(conn, actor, "app.delete", "Application", client_id, {"name": row.name})


def authenticate(conn: sa.Connection, token: str) -> Principal | None:
    """The application a bearer token belongs to, or None."""
    found = _verify(conn, digest(token))
    return found[0] if found is not None else None


def _verify(
    conn: sa.Connection, d: str, now: float | None = None
) -> tuple[Principal, float | None] | None:
    """Look a token digest up: its principal and expiry (epoch seconds), or None.

    The lookup is by digest on a unique index; the final comparison of the stored digest is in
    constant time, so response timing says nothing about how close a guess was.
    """
    row = _STATEMENTS.get(conn, "auth.secret", _secret_lookup).run(conn, {"d": d}).first()
    if row is not None:
        stored, pk, client_id, name, scopes, grant, secret_pk = row
        if grant == "bearer" and hmac.compare_digest(stored, d):
            return Principal(pk, client_id, name, tuple(load_json(scopes)), secret_pk), None
    tok = _STATEMENTS.get(conn, "auth.token", _token_lookup).run(conn, {"d": d}).first()
    if tok is None:
        return None
    stored, scopes, expires, pk, client_id, name, secret_pk = tok
    if not hmac.compare_digest(stored, d):
        return None
    if expires is not None and expires <= (time.time() if now is None else now):
        return None
    return Principal(pk, client_id, name, tuple(load_json(scopes)), secret_pk), expires


class TokenCache:
    """Verified bearer tokens of one process, valid while ``auth_version`` does not move.

    Every revocation, disabling or deletion bumps that version in the same transaction, and each
    request reads it (with the schema version, one statement), so a cached token stops working
    on the first request after the change, in every process. Access tokens also keep their
    expiry. Only digests are kept, and only of tokens that verified.

    A verification is also checked again after RECHECK seconds: a database restored from a
    backup can bring back the version a process cached a token under, while the secret (made
    after the backup) is gone; that process accepted it until it restarted.
    """

    MAX = 10_000
    RECHECK = 60.0

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        # (version, entries) swapped as one object: database threads share the cache, and an
        # entry verified under an older version must never land in a newer version's dict.
        self._state: tuple[int, dict[str, tuple[Principal, float | None, float]]] = (-1, {})

    def authenticate(self, conn: sa.Connection, token: str, auth_version: int) -> Principal | None:
        version, entries = self._state
        if auth_version != version:
            entries = {}
            self._state = (auth_version, entries)
        d = digest(token)
        entry = entries.get(d)
        now = self.clock()
        if entry is None or now - entry[2] > self.RECHECK:
            verified = _verify(conn, d, now)
            if verified is None:
                entries.pop(d, None)
                return None
            if len(entries) >= self.MAX:
                entries.clear()
            entry = entries[d] = (*verified, now)
        principal, expires, _ = entry
        if expires is not None and expires <= now:
            entries.pop(d, None)
            return None
        return principal


_STATEMENTS = StatementCache()


def _secret_lookup() -> sa.Select[Any]:
    return (
        sa.select(
            client_secrets.c.digest,
            applications.c.pk,
            applications.c.client_id,
            applications.c.name,
            applications.c.scopes,
            applications.c.grant_type,
            client_secrets.c.pk,
        )
        .join(applications, applications.c.pk == client_secrets.c.app_pk)
        .where(
            client_secrets.c.digest == sa.bindparam("d"),
            client_secrets.c.revoked.is_(None),
            applications.c.enabled.is_(True),
        )
    )


def _token_lookup() -> sa.Select[Any]:
    return (
        sa.select(
            access_tokens.c.digest,
            access_tokens.c.scopes,
            access_tokens.c.expires,
            applications.c.pk,
            applications.c.client_id,
            applications.c.name,
            access_tokens.c.secret_pk,
        )
        .join(applications, applications.c.pk == access_tokens.c.app_pk)
        .where(access_tokens.c.digest == sa.bindparam("d"), applications.c.enabled.is_(True))
    )
