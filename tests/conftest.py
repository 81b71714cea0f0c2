"""Shared pytest fixtures.

Layout (add new fixtures under the matching heading):

* Live servers -- real ``scimd serve`` subprocesses on 127.0.0.1, provisioned like Entra ID
  expects (bearer-token app, ``IdentificationNumber`` user property). The process helpers live
  in ``tests/support/live_server.py`` (``free_port``, ``start_server``, ``create_app`` ...) so
  test modules can import them too; PostgreSQL-backed servers use the same helpers with
  ``SCIMD_TEST_POSTGRES_URL`` as the database URL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings

from scimd.store import migrate
from scimd.store.directory import Directory
from scimd.store.engine import create_engine
from support.live_server import LiveServer, free_port, provisioned_server, sqlite_url, start_server
from support.stores import opened_directory

__all__ = ["free_port", "live_server", "start_server"]


# --------------------------------------------------------------------------------------------
# The environment
# --------------------------------------------------------------------------------------------

# Settings a developer's shell may hold (SCIMD_PORT for a server of their own, a
# SCIMD_DATABASE_URL): every command and server the tests start would read them, and tests of
# the defaults failed. The tests' own variables stay.
_KEPT = ("SCIMD_TEST_", "SCIMD_BENCH_", "SCIMD_FUZZ_", "SCIMD_SCREENSHOTS")
_CLEARED = sorted(
    name for name in os.environ if name.startswith("SCIMD_") and not name.startswith(_KEPT)
)
for _name in _CLEARED:
    del os.environ[_name]


# Hypothesis: no per-example deadline and no "too slow" check outside CI as well (CI=true loads
# Hypothesis's own "ci" profile, which has neither): both measure the machine's load, and a
# developer's busy laptop failed property tests that hold.
if not os.environ.get("CI"):
    settings.register_profile(
        "scimd-local", deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    settings.load_profile("scimd-local")


def pytest_report_header() -> list[str]:
    return [f"cleared for the tests: {', '.join(_CLEARED)}"] if _CLEARED else []


# --------------------------------------------------------------------------------------------
# Live servers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real SQLite-backed ``scimd serve`` shared by the whole session."""
    workdir = tmp_path_factory.mktemp("live_server")
    database_url = sqlite_url(workdir / "live.db")
    with provisioned_server(database_url, log_dir=workdir) as server:
        yield server


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database on ``SCIMD_TEST_POSTGRES_URL``, dropped afterwards.

    CI (env ``CI`` set) must run these tests, so a missing server fails there; elsewhere the
    test is skipped with the reason.
    """
    import os
    import uuid

    base = os.environ.get("SCIMD_TEST_POSTGRES_URL")
    if not base:
        if os.environ.get("CI"):
            pytest.fail("SCIMD_TEST_POSTGRES_URL is not set; .ci/run starts PostgreSQL for this")
        pytest.skip("set SCIMD_TEST_POSTGRES_URL to run the PostgreSQL tests")
    url = sa.engine.make_url(base)
    name = f"scimd_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.Engine]:
    """An engine on a fresh SQLite database, migrated to the newest revision."""
    engine = create_engine(sqlite_url(tmp_path_factory.mktemp("db") / "scimd.db"))
    migrate.ensure_current(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def directory(any_database_url: str) -> Iterator[Directory]:
    """A ``Directory`` on a fresh database of each supported backend."""
    with opened_directory(any_database_url) as d:
        yield d


@pytest.fixture(params=["sqlite", "postgresql"])
def any_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A fresh database URL on each supported backend."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path_factory.mktemp("db") / "scimd.db")
    return str(request.getfixturevalue("postgres_url"))
