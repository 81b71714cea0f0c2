"""SQLite: remove what the reverted revision 0007 made, where it made it

The old 0007 (see its file) left, on SQLite, the tables ``member_groups`` and
``member_groups_pending``, three triggers on ``members`` that keep filling the pending table,
and no ``ix_members_member_id``: every ``User.groups`` lookup then scanned all memberships.
``members`` itself stayed complete (the triggers only copied its changes), so dropping those
objects and building the index again restores the schema of 0006. A database that never ran the
old 0007 has none of them, and nothing changes. PostgreSQL's 0007 changed nothing.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for trigger in ("members_added", "members_removed", "members_moved"):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.execute("DROP TABLE IF EXISTS member_groups_pending")
    op.execute("DROP TABLE IF EXISTS member_groups")
    op.execute("CREATE INDEX IF NOT EXISTS ix_members_member_id ON members (member_id)")


def downgrade() -> None:
    pass
