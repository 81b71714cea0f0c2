"""The OAuth 2 client credentials grant (RFC 6749 §4.4): client secret in, access token out.

Pure logic over a database connection; the HTTP side (form parsing, client authentication
headers, status codes on the wire) is ``scimd.web.oauth``.

Scope parsing
    RFC 6749 §3.3 makes ``scope`` a space-separated list, but this server's scope names contain
    a space ("USER SYNC"). The value is therefore read as words: ``_`` counts as a space, runs of
    whitespace collapse, case is ignored, and at each position the longest scope name whose
    words follow is taken. So ``API``, ``USER SYNC``, ``API USER SYNC``, ``USER SYNC API``,
    ``user_sync`` and ``Api  User  Sync`` all parse; a word that starts no scope name (or a
    ``USER`` without ``SYNC``) is ``invalid_scope``. An absent or blank ``scope`` grants every
    scope the application has. The response's ``scope`` lists the granted names, space-joined
    in canonical order (``"API USER SYNC"``), which parses back to the same set.

Lifetime
    Tokens live for the application's ``token_lifetime`` seconds. ``0`` means the token never
    expires: it is stored with ``expires`` NULL and the response carries no ``expires_in``
    (RFC 6749 §5.1 makes it RECOMMENDED, not required; inventing a large number would lie to
    the client about when to refresh). Such a token dies only when its application is
    disabled, revoked or deleted. Entra's gallery asks for 60 minute to 6 hour tokens, so
    admins should create client credentials applications with e.g. ``--lifetime 3600``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any

import sqlalchemy as sa

from scimd.auth import apps
from scimd.scim.values import now_datetime
from scimd.store import audit as A
from scimd.store import versions
from scimd.store.prepared import load_json
from scimd.store.tables import access_tokens, applications, client_secrets

# Compared against when the client id is unknown, so that case costs the same work.
_NO_DIGEST = hashlib.sha256(b"no such client").hexdigest()
_SCOPE_WORDS = sorted((tuple(s.split()) for s in apps.SCOPES), key=len, reverse=True)


class TokenError(Exception):
    """An RFC 6749 §5.2 error response: ``error`` code, human description, HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def to_dict(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def invalid_client() -> TokenError:
    """One answer for every failed client authentication: it never says which part was wrong."""
    return TokenError("invalid_client", "client authentication failed", 401)


def parse_scope(requested: str | None) -> list[str] | None:
    """The scope names in ``requested`` in canonical order, or None when it is absent or blank.

    Raises ``invalid_scope`` for anything that is not a known scope (see the module docstring).
    """
    if requested is None:
        return None
    given = requested.replace("_", " ").split()  # as written, for the error's words
    words = [w.upper() for w in given]
    if not words:
        return None
    found: set[str] = set()
    i = 0
    while i < len(words):
        match = next((w for w in _SCOPE_WORDS if tuple(words[i : i + len(w)]) == w), None)
        if match is None:
            raise TokenError(
                "invalid_scope",
                f"'{given[i][:60]}' is not a scope: the scopes are {', '.join(apps.SCOPES)}",
            )
        found.add(" ".join(match))
        i += len(match)
    return [s for s in apps.SCOPES if s in found]


def format_scope(scopes: list[str]) -> str:
    return " ".join(scopes)


def issue_token(
    conn: sa.Connection,
    client_id: str,
    client_secret: str,
    requested_scope: str | None,
    *,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Authenticate the client by its secret and issue an access token (RFC 6749 §4.4.3).

    Returns the §5.1 response body; raises ``TokenError`` for the §5.2 cases. Must run in a
    write transaction: the token row, the purge of the application's expired tokens and the
    ``token.issue`` audit row commit together.
    """
    app, secret_pk = _authenticate_client(conn, client_id, client_secret)
    if app.grant_type != "client_credentials":
        raise TokenError(
            "unauthorized_client",
            "this application uses a long-lived bearer token; it may not use the "
            "client_credentials grant",
        )
    allowed = [s for s in apps.SCOPES if s in load_json(app.scopes)]
    wanted = parse_scope(requested_scope)
    if wanted is None:
        granted = allowed
    else:
        missing = [s for s in wanted if s not in allowed]
        if missing:
            raise TokenError(
                "invalid_scope",
                f"this application is not allowed the scope(s) {', '.join(missing)}; "
                f"it has {', '.join(allowed)}",
            )
        granted = wanted

    now = int(time.time())
    lifetime = int(app.token_lifetime or 0)
    # From the next whole second: counted from the one it was issued in, a token lived up to a
    # second less than its expires_in said (a one-second token could end before its first use).
    expires = now + 1 + lifetime if lifetime > 0 else None
    token = secrets.token_urlsafe(32)  # 256 random bits
    # Expired tokens of every application go (one that stopped asking kept its own for
    # good); the table holds at most MAX_LIVE_TOKENS per application, so this stays short.
    # Those another transaction holds are left to a later request (PostgreSQL's SKIP
    # LOCKED): a revoke or delete of another application removing them too made a token
    # request wait for it, and the two could each wait for the other's rows.
    expired = (
        sa.select(access_tokens.c.pk)
        .where(access_tokens.c.expires.is_not(None), access_tokens.c.expires <= now)
        .with_for_update(skip_locked=True)
    )
    conn.execute(access_tokens.delete().where(access_tokens.c.pk.in_(expired)))
    conn.execute(
        access_tokens.insert().values(
            app_pk=app.pk,
            digest=apps.digest(token),
            scopes=granted,
            created=now_datetime(),
            expires=expires,
            secret_pk=secret_pk,
        )
    )
    _keep_newest(conn, app.pk)
    A.record(
        conn,
        A.Actor("app", app.client_id, app.name, request_id),
        "token.issue",
        "Application",
        app.client_id,
        {"scopes": granted, "expires_in": lifetime or None},
    )
    body: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
    if expires is not None:
        body["expires_in"] = lifetime
    body["scope"] = format_scope(granted)
    return body


# Live access tokens an application may hold; asking for more ends its oldest. A client that
# asked for a token per request (25 a second) held ~90,000 working credentials at an hour's
# lifetime, and never-expiring ones (lifetime 0) were never removed. Entra keeps one until it
# expires.
MAX_LIVE_TOKENS = 1000


def _keep_newest(conn: sa.Connection, app_pk: int) -> None:
    cutoff = (
        sa.select(access_tokens.c.pk)
        .where(access_tokens.c.app_pk == app_pk)
        .order_by(access_tokens.c.pk.desc())
        .limit(1)
        .offset(MAX_LIVE_TOKENS)
        .scalar_subquery()
    )
    ended = conn.execute(
        access_tokens.delete().where(access_tokens.c.app_pk == app_pk, access_tokens.c.pk <= cutoff)
    )
    if ended.rowcount:
        versions.bump(conn, versions.AUTH)  # verifications cached in any process end now


def _authenticate_client(
    conn: sa.Connection, client_id: str, client_secret: str
) -> tuple[Any, int]:
    """The enabled application whose unrevoked secret this is, and the secret's pk; else
    ``invalid_client``.

    Every stored digest is compared in constant time (an unknown client id is compared against
    a dummy digest), so timing says nothing about how close a secret was. Client ids are not
    secrets (RFC 6749 §2.2); the error never says whether the id or the secret was wrong.
    """
    d = apps.digest(client_secret)
    app = conn.execute(
        sa.select(
            applications.c.pk,
            applications.c.client_id,
            applications.c.name,
            applications.c.grant_type,
            applications.c.scopes,
            applications.c.token_lifetime,
            applications.c.enabled,
        )
        .where(applications.c.client_id == client_id)
        # PostgreSQL: the application's row first, as every change of an application takes
        # it (``apps._app_row``); a disable then waits for the token this issues and deletes
        # it (it missed the uncommitted row, which worked again once the application was
        # enabled).
        .with_for_update(read=True)
    ).first()
    stored: list[tuple[int | None, str]] = [(None, _NO_DIGEST)]
    if app is not None:
        stored = [
            (r.pk, r.digest)
            for r in conn.execute(
                sa.select(client_secrets.c.pk, client_secrets.c.digest)
                .where(client_secrets.c.app_pk == app.pk, client_secrets.c.revoked.is_(None))
                # PostgreSQL: a revocation of these secrets waits for the token this issues,
                # and then deletes it; one already made is seen, and nothing is issued.
                .with_for_update(read=True)
            )
        ] or stored
    matched: int | None = None
    for pk, s in stored:
        if hmac.compare_digest(s, d):  # every digest is compared: no early exit
            matched = pk
    if app is None or not app.enabled or matched is None:
        raise invalid_client()
    return app, matched
