"""What binds an open approval request to its policy: the caller's groups (a reloaded policy is checked against the
call as it was made), how long an approval may wait to be used, and the moment an approved one expires unused.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-09
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("approval_requests") as batch:
        batch.add_column(sa.Column("groups", sa.String(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("use_within", sa.Float(), nullable=True))
        batch.add_column(sa.Column("use_by", sa.DateTime(timezone=True), nullable=True))
        batch.create_index(batch.f("ix_approval_requests_use_by"), ["use_by"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("approval_requests") as batch:
        batch.drop_index(batch.f("ix_approval_requests_use_by"))
        batch.drop_column("use_by")
        batch.drop_column("use_within")
        batch.drop_column("groups")
