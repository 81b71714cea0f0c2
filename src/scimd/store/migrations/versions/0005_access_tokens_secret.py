"""Access tokens remember the secret that obtained them

Revoking a secret used to end every access token of its application, because which secret
issued a token was not recorded: after a rotation, revoking the old secret cut off clients
already using the new one. Tokens issued before this revision have no secret recorded and
still end with any revoked secret of their application.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("access_tokens") as batch:
        batch.add_column(sa.Column("secret_pk", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("access_tokens") as batch:
        batch.drop_column("secret_pk")
