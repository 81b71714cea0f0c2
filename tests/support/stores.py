"""In-process stores for tests that call ``scimd.store`` directly (no server)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from scimd.store import migrate
from scimd.store.directory import Directory
from scimd.store.engine import create_engine


@contextmanager
def opened_directory(database_url: str) -> Iterator[Directory]:
    """A ``Directory`` on ``database_url``, its schema made current; closed afterwards."""
    engine = create_engine(database_url)
    migrate.ensure_current(engine)
    d = Directory(engine)
    try:
        yield d
    finally:
        d.close()
        engine.dispose()
