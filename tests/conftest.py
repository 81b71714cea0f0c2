"""Shared pytest fixtures.

Layout (add new fixtures under the matching heading):

* Live servers -- real ``scimd serve`` subprocesses on 127.0.0.1, provisioned like Entra ID
  expects (bearer-token app, ``IdentificationNumber`` user property). The process helpers live
  in ``tests/support/live_server.py`` (``free_port``, ``start_server``, ``create_app`` ...) so
  test modules can import them too; PostgreSQL-backed servers use the same helpers with
  ``SCIMD_TEST_POSTGRES_URL`` as the database URL.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.live_server import LiveServer, free_port, provisioned_server, sqlite_url, start_server

__all__ = ["free_port", "live_server", "start_server"]


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
