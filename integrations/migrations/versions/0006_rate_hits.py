"""Rate limits shared by every replica: one row per call a limit admitted (a sliding log), until its window ends.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_hits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rate_hits_key_at", "rate_hits", ["key", "at"], unique=False)
    op.create_index(op.f("ix_rate_hits_expires"), "rate_hits", ["expires"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_rate_hits_expires"), table_name="rate_hits")
    op.drop_index("ix_rate_hits_key_at", table_name="rate_hits")
    op.drop_table("rate_hits")
