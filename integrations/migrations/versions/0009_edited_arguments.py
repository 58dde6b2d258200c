"""Approve with edits: whether the request's rule allows edits, and the arguments an approver edited the call to
(approved with edits, the call runs with them instead).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("approval_requests") as batch:
        batch.add_column(sa.Column("allow_edits", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("edited_arguments", sa.String(), nullable=True))
    with op.batch_alter_table("approval_requests") as batch:  # the default only fills the rows already there
        batch.alter_column("allow_edits", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("approval_requests") as batch:
        batch.drop_column("edited_arguments")
        batch.drop_column("allow_edits")
