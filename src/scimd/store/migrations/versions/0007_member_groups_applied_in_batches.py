"""SQLite: the member -> groups index is a table brought up to date in batches

``ix_members_member_id`` changed at a random place for every member added or removed: a
100-member PATCH wrote ~100 pages of it at COMMIT. After a sync had filled groups with 200,000
memberships (10,000 users), 100-member adds and removes on a small group ran at 500 req/s with
it and 1,228 without it (c=8; 358 and 1,186 at c=32). ``member_groups`` now holds the same
pairs, and triggers put every membership added or removed in ``member_groups_pending``, a small
table; the server applies the pending pairs to ``member_groups`` in batches, in key order
(``store/member_index.py``). Readers check the pending pairs against ``members``. PostgreSQL
keeps its index (a change there is a WAL record, not a page written at commit).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The SQL of this revision's day (a migration does not import code a later edit could change).
TRIGGERS = (
    "CREATE TRIGGER members_added AFTER INSERT ON members BEGIN"
    " INSERT INTO member_groups_pending (member_id, group_pk)"
    " VALUES (NEW.member_id, NEW.group_pk) ON CONFLICT DO NOTHING; END",
    "CREATE TRIGGER members_removed AFTER DELETE ON members BEGIN"
    " INSERT INTO member_groups_pending (member_id, group_pk)"
    " VALUES (OLD.member_id, OLD.group_pk) ON CONFLICT DO NOTHING; END",
    # Nothing updates a membership's key today; should anything, both pairs are pending.
    "CREATE TRIGGER members_moved AFTER UPDATE OF member_id, group_pk ON members BEGIN"
    " INSERT INTO member_groups_pending (member_id, group_pk)"
    " VALUES (OLD.member_id, OLD.group_pk), (NEW.member_id, NEW.group_pk)"
    " ON CONFLICT DO NOTHING; END",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        "CREATE TABLE member_groups ("
        " member_id VARCHAR(64) NOT NULL,"
        " group_pk INTEGER NOT NULL,"
        " CONSTRAINT pk_member_groups PRIMARY KEY (member_id, group_pk)"
        ") WITHOUT ROWID"
    )
    op.execute(
        "CREATE TABLE member_groups_pending ("
        " member_id VARCHAR(64) NOT NULL,"
        " group_pk INTEGER NOT NULL,"
        " CONSTRAINT pk_member_groups_pending PRIMARY KEY (member_id, group_pk)"
        ") WITHOUT ROWID"
    )
    op.execute(
        "INSERT INTO member_groups (member_id, group_pk)"
        " SELECT member_id, group_pk FROM members ORDER BY member_id, group_pk"
    )
    for trigger in TRIGGERS:
        op.execute(trigger)
    op.execute("DROP INDEX ix_members_member_id")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("CREATE INDEX ix_members_member_id ON members (member_id)")
    for trigger in ("members_added", "members_removed", "members_moved"):
        op.execute(f"DROP TRIGGER {trigger}")
    op.execute("DROP TABLE member_groups_pending")
    op.execute("DROP TABLE member_groups")
