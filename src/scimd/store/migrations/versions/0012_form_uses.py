"""The one-time ids of portal forms that make a secret are recorded when used

The portal kept the ids in the session cookie, so two submissions sent together (a double
click on "Rotate secret") both found theirs unused and made two secrets, one of which nobody
ever saw. An id is now inserted, under a unique key, in the transaction that makes the secret.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "form_uses",
        sa.Column("once", sa.String(length=64), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("once", name=op.f("pk_form_uses")),
    )
    op.create_index(op.f("ix_form_uses_used"), "form_uses", ["used"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_form_uses_used"), table_name="form_uses")
    op.drop_table("form_uses")
