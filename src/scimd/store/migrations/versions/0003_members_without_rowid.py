"""SQLite: the membership table becomes a WITHOUT ROWID table clustered on its primary key

A rowid table kept each membership three times: the row (in rowid order), the primary-key index
(group_pk, member_id) and ``ix_members_member_id`` (member_id, rowid). Clustered on the primary
key, a membership is stored twice, an add or remove writes one B-tree fewer, and
``ix_members_member_id`` holds (member_id, group_pk), so User.groups reads no table row.

PostgreSQL keeps its table: a heap with both indexes is what it has anyway.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _rebuild(without_rowid: bool) -> None:
    """Copy ``members`` into a new table of the wanted kind (SQLite cannot alter it in place)."""
    suffix = " WITHOUT ROWID" if without_rowid else ""
    op.execute(
        "CREATE TABLE members_new ("
        " group_pk INTEGER NOT NULL,"
        " member_id VARCHAR(64) NOT NULL,"
        " member_type VARCHAR(16) NOT NULL,"
        " CONSTRAINT pk_members PRIMARY KEY (group_pk, member_id),"
        " CONSTRAINT fk_members_group_pk_groups FOREIGN KEY (group_pk)"
        " REFERENCES groups (pk) ON DELETE CASCADE"
        f"){suffix}"
    )
    op.execute(
        "INSERT INTO members_new (group_pk, member_id, member_type)"
        " SELECT group_pk, member_id, member_type FROM members ORDER BY group_pk, member_id"
    )
    op.execute("DROP TABLE members")
    op.execute("ALTER TABLE members_new RENAME TO members")
    op.execute("CREATE INDEX ix_members_member_id ON members (member_id)")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(without_rowid=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(without_rowid=False)
