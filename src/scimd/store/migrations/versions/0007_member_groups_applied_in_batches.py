"""SQLite: the member -> groups index applied in batches (reverted; does nothing now)

Commits 7020758..9a1f267 shipped this revision: on SQLite it moved the member -> groups index
into tables applied in batches by a background thread, with triggers on ``members``. That design
was reverted (5b448b3) by deleting this file, and databases it had upgraded were then refused as
"made by a newer scimd", with no way forward. The revision is known again, and does nothing:
a database that ran the old 0007 keeps its objects until 0008 removes them, and one that did
not needs nothing here.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
