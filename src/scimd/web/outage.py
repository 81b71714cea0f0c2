"""What the server says, and logs, when the database cannot serve a request (a 503)."""

from __future__ import annotations

import logging
import time

from scimd.store.engine import DatabaseFileGone, is_busy, is_damaged, is_full, is_read_only
from scimd.store.onloop import DatabaseTimeout

log = logging.getLogger("scimd.web")

_TRACEBACK_EVERY = 10.0  # seconds
_last_traceback = [-_TRACEBACK_EVERY]


def database_unavailable(error: Exception, what: str) -> None:
    """Log a request the database could not serve: with its traceback at most once every ten
    seconds, in one line otherwise. During an outage every request fails the same way, and a
    traceback each (about 10 KB) wrote 70 MB of log in 20 seconds."""
    now = time.monotonic()
    if now - _last_traceback[0] >= _TRACEBACK_EVERY:
        _last_traceback[0] = now
        log.error("database unavailable on %s", what, exc_info=error)
    else:
        first = str(getattr(error, "orig", None) or error).strip().splitlines()
        log.error("database unavailable on %s: %s", what, first[0] if first else type(error))


def unavailable_detail(error: Exception) -> str:
    """What a client is told when the database could not serve its request."""
    if isinstance(error, DatabaseTimeout):
        # Cut off mid-call: a commit may have been on its way.
        return (
            f"the database did not answer within {error.seconds:g} s; retry the request"
            " (a change it asked for may have been saved: read it back first)"
        )
    if isinstance(error, DatabaseFileGone):
        return (
            "the database file was removed or replaced while the server ran: nothing of this"
            " request was saved; an operator must restore the file and restart scimd"
        )
    if is_full(error):
        return (
            "the database's disk is full: nothing of this request was saved; retry once space"
            " has been freed"
        )
    if is_read_only(error):
        return (
            "the database is read-only (its storage full, or a standby): nothing of this request"
            " was saved; retry later"
        )
    if is_damaged(error):
        return (
            "the database file is damaged: an operator must restore it from a backup (README,"
            " Backups); retry later"
        )
    if is_busy(error):
        # SQLite's write lock, held past the wait by another process (a command, a backup,
        # another server): said as such, so that an operator knows where to look.
        return (
            "the database is locked by another process (a command, a backup or another"
            " server writing); retry the request"
        )
    return "the database is unavailable; retry the request"
