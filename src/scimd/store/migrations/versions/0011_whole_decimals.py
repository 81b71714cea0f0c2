"""Decimal property values that are whole doubles of 2^53 or more are stored as whole numbers

Since the values of Decimal properties were given one stored form on both databases, such a
double (``1.2345678901234567e19``) is written as the whole number it is
(``12345678901234567000``: within 64 bits its exact value, from 2^63 to 2^64 its shortest
digits), and a negative zero as zero. Values written before kept their old form: read back
unlike anything this version writes, and a PUT of what a GET returned then changed the user
(a new version, an audit record) though nothing had changed. This revision rewrites them as
a write does now; it changes no value, so the users keep their versions.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# The URN the properties were kept under before the database recorded one (scimd's default).
DEFAULT_URN = "urn:ietf:params:scim:schemas:extension:bizagi:2.0:UserProperties"
INT_MAX = 2**63 - 1
BATCH = 1000


def canonical(value: Any) -> Any:
    """A stored Decimal value in the form ``values.coerce`` writes it today (frozen here: a
    migration must not change when the application's code does)."""
    if not isinstance(value, float) or value != value or value in (float("inf"), float("-inf")):
        return value
    if value.is_integer() and abs(value) >= 2**53:
        if -INT_MAX - 1 <= value <= INT_MAX:
            return int(value)
        if INT_MAX < value < 2**64:
            return int(Decimal(repr(value)))
    return value + 0.0  # -0.0 is 0.0


def upgrade() -> None:
    conn = op.get_bind()
    names: list[str] = [
        str(name)
        for (name,) in conn.execute(
            sa.text("SELECT name FROM user_properties WHERE type = 'Decimal'")
        )
    ]
    if not names:
        return
    urn: str = (
        conn.execute(
            sa.text("SELECT value FROM settings WHERE key = 'properties_urn'")
        ).scalar_one_or_none()
        or DEFAULT_URN
    )
    # Only values that can change: whole doubles of 2^53 or more, and zero (-0.0 among them;
    # PostgreSQL's numbers have no negative zero). PostgreSQL's jsonb keeps a number's digits
    # as written: up to 1e16 a double was written with a ".0", read back as a double.
    tests, params = [], {}
    for i, name in enumerate(names):
        if conn.dialect.name == "sqlite":
            params[f"p{i}"] = f'$."{urn}"."{name}"'
            value = f"json_extract(doc, :p{i})"
            tests.append(
                f"(json_type(doc, :p{i}) = 'real' AND (abs({value}) >= 9007199254740992.0"
                f" OR {value} = 0))"
            )
        else:
            params[f"p{i}"] = name
            number = f"doc -> :urn -> :p{i}"
            tests.append(
                f"(jsonb_typeof({number}) = 'number' AND position('.' IN CAST({number} AS TEXT))"
                f" > 0 AND abs(CAST({number} AS NUMERIC)) >= 9007199254740992)"
            )
    if conn.dialect.name != "sqlite":
        params["urn"] = urn
    where = " OR ".join(tests)
    pks = [pk for (pk,) in conn.execute(sa.text(f"SELECT pk FROM users WHERE {where}"), params)]
    if conn.dialect.name == "sqlite":
        update = sa.text("UPDATE users SET doc = :doc WHERE pk = :pk")
        batch_of = "SELECT pk, doc FROM users WHERE pk IN (SELECT value FROM json_each(:pks))"
    else:
        update = sa.text("UPDATE users SET doc = CAST(:doc AS JSONB) WHERE pk = :pk")
        batch_of = (
            "SELECT pk, doc FROM users WHERE pk IN"
            " (SELECT CAST(value AS BIGINT) FROM jsonb_array_elements_text(CAST(:pks AS JSONB)))"
        )
    for start in range(0, len(pks), BATCH):  # documents read a batch at a time
        batch = pks[start : start + BATCH]
        rows = conn.execute(sa.text(batch_of), {"pks": orjson.dumps(batch).decode()})
        for pk, raw in rows.all():
            doc: dict[str, Any] = raw if isinstance(raw, dict) else orjson.loads(str(raw))
            ext = doc.get(urn) or {}
            changed = False
            for name in names:
                if name in ext:
                    new = canonical(ext[name])
                    if type(new) is not type(ext[name]) or repr(new) != repr(ext[name]):
                        ext[name] = new
                        changed = True
            if changed:
                conn.execute(update, {"doc": orjson.dumps(doc).decode(), "pk": pk})


def downgrade() -> None:
    pass  # the values are the same numbers: nothing to undo
