"""Lower-cased userNames and group displayNames fold the final sigma as the other small sigma

``str.lower()`` writes a capital sigma as the final sigma (U+03C2) at the end of a word and as
U+03C3 elsewhere, so ``sw``, ``ew`` and ``co`` filters missed substrings across that boundary.
Case-insensitive values now fold both to U+03C3 (``values.fold``); this revision folds the
stored ``user_name_lower`` and ``display_name_lower`` the same way.

Two names that differed only in a final sigma are one name now. The upgrade refuses such a
database and names them, changing nothing: keeping the old form for one of them (the first
version of this revision) left a user whose every write was a 409 on the unique index, and
whose own userName found the other user (Entra would have matched and changed the wrong
account).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# The one import from scimd: the error its commands print as one line (a class that stays).
from scimd.store.migrate import DatabaseUnsupported

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

FINAL_SIGMA, SIGMA = "\u03c2", "\u03c3"


def upgrade() -> None:
    conn = op.get_bind()
    changes: list[tuple[str, str, object, str]] = []
    clashes: list[str] = []
    for table, column, label in (
        ("users", "user_name_lower", "userName"),
        ("groups", "display_name_lower", "group displayName"),
    ):
        name = "user_name" if table == "users" else "display_name"
        rows = conn.execute(
            sa.text(f"SELECT pk, id, {name}, {column} FROM {table} WHERE {column} LIKE :pattern"),
            {"pattern": f"%{FINAL_SIGMA}%"},
        ).all()
        new_forms: dict[str, str] = {}
        for pk, rid, shown, old in rows:
            new = str(old).replace(FINAL_SIGMA, SIGMA)
            holder = conn.execute(
                sa.text(f"SELECT id FROM {table} WHERE {column} = :new"), {"new": new}
            ).scalar()
            other = holder if holder is not None else new_forms.get(new)
            if other is not None:
                clashes.append(f"{label} '{shown}' (id {rid}) and id {other}")
            new_forms[new] = str(rid)
            changes.append((table, column, pk, new))
    if clashes:
        raise DatabaseUnsupported(
            "cannot upgrade: these names become one name now that a final sigma compares as"
            f" any small sigma: {'; '.join(clashes[:10])}{' ...' if len(clashes) > 10 else ''}."
            " Rename or delete one of each pair with the scimd you ran before, then upgrade"
            " (nothing was changed)"
        )
    for table, column, pk, new in changes:
        conn.execute(
            sa.text(f"UPDATE {table} SET {column} = :new WHERE pk = :pk"), {"new": new, "pk": pk}
        )


def downgrade() -> None:
    pass
