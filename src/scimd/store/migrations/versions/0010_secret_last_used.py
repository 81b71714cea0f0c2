"""When each client secret was last used

An application's ``last_used`` said when it was used, not with which secret: during a rotation
nothing showed when its clients had moved to the new secret (the README says to revoke the old
one once they use the new), nor whether a leaked one was still being used before it was
revoked. Each secret now keeps its own, written with the application's (at most once a
minute).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column: ALTER TABLE ... ADD COLUMN on both databases, no table rebuilt.
    op.add_column("client_secrets", sa.Column("last_used", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("client_secrets") as batch_op:
        batch_op.drop_column("last_used")
