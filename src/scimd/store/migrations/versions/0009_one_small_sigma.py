"""Lower-cased userNames and group displayNames fold the final sigma as the other small sigma

``str.lower()`` writes a capital sigma as the final sigma (U+03C2) at the end of a word and as
U+03C3 elsewhere, so ``sw``, ``ew`` and ``co`` filters missed substrings across that boundary.
Case-insensitive values now fold both to U+03C3 (``values.fold``); this revision folds the
stored ``user_name_lower`` and ``display_name_lower`` the same way. A name whose new form
another row already holds (two names that differed only in a final sigma, now one) keeps its
old form rather than failing the upgrade: lookups by the new form find the other row.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

FINAL_SIGMA, SIGMA = "\u03c2", "\u03c3"


def upgrade() -> None:
    conn = op.get_bind()
    for table, column in (("users", "user_name_lower"), ("groups", "display_name_lower")):
        rows = conn.execute(
            sa.text(f"SELECT pk, {column} FROM {table} WHERE {column} LIKE :pattern"),
            {"pattern": f"%{FINAL_SIGMA}%"},
        ).all()
        for pk, old in rows:
            new = str(old).replace(FINAL_SIGMA, SIGMA)
            taken = conn.execute(
                sa.text(f"SELECT 1 FROM {table} WHERE {column} = :new"), {"new": new}
            ).first()
            if taken is None:
                conn.execute(
                    sa.text(f"UPDATE {table} SET {column} = :new WHERE pk = :pk"),
                    {"new": new, "pk": pk},
                )


def downgrade() -> None:
    pass
