"""The per-process cache of verified bearer tokens: revocation and expiry still take effect."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from scimd.auth import apps, tokens
from scimd.store import audit, versions

CLI = audit.Actor("cli", "test")


@pytest.fixture
def engine(sqlite_engine: sa.Engine) -> sa.Engine:
    return sqlite_engine


def check(engine: sa.Engine, cache: apps.TokenCache, token: str) -> apps.Principal | None:
    """What a SCIM request does: read the version counters, then ask the cache."""
    with engine.connect() as conn:
        return cache.authenticate(conn, token, versions.read(conn).auth)


def bearer_app(engine: sa.Engine, name: str = "entra") -> tuple[str, str]:
    with engine.begin() as conn:
        row, secret = apps.create_app(conn, name, "bearer", ["USER SYNC"], CLI)
    return row["client_id"], secret


def test_cached_token_stops_working_when_revoked(engine: sa.Engine) -> None:
    cache = apps.TokenCache()
    cid, secret = bearer_app(engine)
    _, other = bearer_app(engine, "okta")
    assert check(engine, cache, secret) is not None
    assert check(engine, cache, other) is not None
    with engine.begin() as conn:
        apps.revoke_app(conn, cid, CLI)
    assert check(engine, cache, secret) is None
    assert check(engine, cache, other) is not None  # the other application is unaffected


@pytest.mark.parametrize("change", ["disable", "delete", "revoke_secret"])
def test_every_loss_of_access_ends_the_cached_verification(engine: sa.Engine, change: str) -> None:
    cache = apps.TokenCache()
    cid, secret = bearer_app(engine)
    assert check(engine, cache, secret) is not None
    with engine.begin() as conn:
        if change == "disable":
            apps.set_enabled(conn, cid, False, CLI)
        elif change == "delete":
            apps.delete_app(conn, cid, CLI)
        else:
            secret_pk = apps.get_app(conn, cid)["secrets"][0]["id"]
            apps.revoke_secret(conn, cid, secret_pk, CLI)
    assert check(engine, cache, secret) is None


def test_rotation_keeps_both_secrets_valid(engine: sa.Engine) -> None:
    cache = apps.TokenCache()
    cid, old = bearer_app(engine)
    assert check(engine, cache, old) is not None
    with engine.begin() as conn:
        new = apps.rotate_secret(conn, cid, CLI)
    assert check(engine, cache, old) is not None
    assert check(engine, cache, new) is not None


def test_cached_token_expires(engine: sa.Engine) -> None:
    now = [1_000_000_000.0]
    cache = apps.TokenCache(clock=lambda: now[0])
    with engine.begin() as conn:
        row, secret = apps.create_app(
            conn, "cc", "client_credentials", ["USER SYNC"], CLI, lifetime=60
        )
        issued = tokens.issue_token(conn, row["client_id"], secret, None)
    token = issued["access_token"]
    with engine.begin() as conn:  # align the stored expiry with the test's clock
        conn.execute(sa.text("UPDATE access_tokens SET expires = :e"), {"e": int(now[0]) + 60})
    assert check(engine, cache, token) is not None
    now[0] += 59
    assert check(engine, cache, token) is not None  # still valid, served from the cache
    now[0] += 2
    assert check(engine, cache, token) is None


def test_unknown_tokens_are_not_cached(engine: sa.Engine) -> None:
    cache = apps.TokenCache()
    assert check(engine, cache, "not-a-token") is None
    assert check(engine, cache, "not-a-token") is None


def test_a_secret_gone_without_a_version_change_is_checked_again(engine: sa.Engine) -> None:
    """A database restored from a backup can bring back the version a process cached a token
    under, while the secret (made after the backup) is gone: that process accepted it until it
    restarted. A verification is checked again after RECHECK seconds."""
    now = [1_000.0]
    cache = apps.TokenCache(clock=lambda: now[0])
    _, secret = bearer_app(engine)
    assert check(engine, cache, secret) is not None
    with engine.begin() as conn:  # what a restore does: the secret gone, the version as it was
        conn.execute(sa.text("DELETE FROM client_secrets"))
    now[0] += cache.RECHECK - 1
    assert check(engine, cache, secret) is not None  # within RECHECK: from the cache
    now[0] += 2
    assert check(engine, cache, secret) is None
