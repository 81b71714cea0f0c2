"""One-time ids of the portal's forms that make a secret (add an application, rotate one).

The page that shows a new secret answers the POST itself (a secret shown once cannot wait in
a cookie for a redirect), so a second submission of the same form, a reload or a double
click, would make a second secret that nobody sees. Each such form carries a random id; the
transaction that makes the secret records it under a unique key, and a second use fails.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from scimd.store.tables import form_uses

# How long a used id is remembered: a form is not submitted again a day later.
KEEP_SECONDS = 24 * 3600


class UsedBefore(Exception):
    """This form was submitted already: nothing was made."""


def use_once(conn: sa.Connection, once: str) -> None:
    """Record ``once`` as used, in the caller's transaction (UsedBefore: it was)."""
    now = int(time.time())
    conn.execute(form_uses.delete().where(form_uses.c.used < now - KEEP_SECONDS))
    try:
        conn.execute(form_uses.insert().values(once=once, used=now))
    except IntegrityError:
        raise UsedBefore() from None  # the transaction, and what it made, is rolled back
