"""Portal sessions are recorded server-side, as digests of their ids

A session cookie is signed with a key kept in the database, so whoever could read the database
(a backup) could sign a cookie for any admin. A cookie now also carries a random session id
whose SHA-256 digest must be in ``admin_sessions``: the database holds no id a cookie could
carry. Sessions from before this revision end (their cookies have no id).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_sessions",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("admin_pk", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["admin_pk"],
            ["admins.pk"],
            name=op.f("fk_admin_sessions_admin_pk_admins"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_admin_sessions")),
        sa.UniqueConstraint("digest", name=op.f("uq_admin_sessions_digest")),
    )
    op.create_index(
        op.f("ix_admin_sessions_admin_pk"), "admin_sessions", ["admin_pk"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_admin_sessions_admin_pk"), table_name="admin_sessions")
    op.drop_table("admin_sessions")
