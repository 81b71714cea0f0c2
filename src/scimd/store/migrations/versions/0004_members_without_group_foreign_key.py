"""Memberships without a foreign key to their group: the directory removes them itself

The key checked every inserted membership against ``groups`` (on PostgreSQL one trigger query
per row: 100 inserts took 0.65 ms with it, 0.38 without, measured in psql), and its ON DELETE
CASCADE removed a deleted group's memberships. Every membership is inserted by a write that
holds its group's row (creating it, or updating it and bumping its version), and every delete
of a group now removes the group's memberships in the same transaction, so the key checked
nothing the writes do not guarantee. Over HTTP on PostgreSQL, batches of 100 new members
(alternating runs, c=8): with 200 seeded users 699-873 -> 817-1,031 req/s and PostgreSQL's CPU
per request 1,615-1,875 -> 1,312-1,675 µs; with 3,000 seeded users +2-4%, and 100-member
changes on a small or large group within noise. On SQLite no difference was measurable.

The downgrade removes memberships of groups that no longer exist, then restores the key.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

FK = "fk_members_group_pk_groups"


def _rebuild_sqlite(foreign_key: bool) -> None:
    """Copy ``members`` into a new WITHOUT ROWID table (SQLite cannot drop a constraint).

    Like 0003's copy, on purpose: a migration keeps the SQL of its day, so it does not import
    another revision's code, which a later edit could change under it."""
    fk = (
        f", CONSTRAINT {FK} FOREIGN KEY (group_pk) REFERENCES groups (pk) ON DELETE CASCADE"
        if foreign_key
        else ""
    )
    op.execute(
        "CREATE TABLE members_new ("
        " group_pk INTEGER NOT NULL,"
        " member_id VARCHAR(64) NOT NULL,"
        " member_type VARCHAR(16) NOT NULL,"
        f" CONSTRAINT pk_members PRIMARY KEY (group_pk, member_id){fk}"
        ") WITHOUT ROWID"
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
        _rebuild_sqlite(foreign_key=False)
    else:
        op.drop_constraint(FK, "members", type_="foreignkey")


def downgrade() -> None:
    op.execute("DELETE FROM members WHERE group_pk NOT IN (SELECT pk FROM groups)")
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(foreign_key=True)
    else:
        op.create_foreign_key(FK, "members", "groups", ["group_pk"], ["pk"], ondelete="CASCADE")
