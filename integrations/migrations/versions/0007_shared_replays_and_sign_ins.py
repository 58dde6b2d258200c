"""Slack's replay cache and the sign-in throttle in the database, shared by every replica.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "slack_replays",
        sa.Column("signature", sa.String(length=80), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("signature"),
    )
    op.create_index(op.f("ix_slack_replays_seen_at"), "slack_replays", ["seen_at"], unique=False)
    op.create_table(
        "sign_in_failures",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_sign_in_failures_client"), "sign_in_failures", ["client"], unique=False)
    op.create_index(op.f("ix_sign_in_failures_at"), "sign_in_failures", ["at"], unique=False)
    op.create_table(
        "sign_in_known",
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("client"),
    )
    op.create_index(op.f("ix_sign_in_known_at"), "sign_in_known", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_sign_in_known_at"), table_name="sign_in_known")
    op.drop_table("sign_in_known")
    op.drop_index(op.f("ix_sign_in_failures_at"), table_name="sign_in_failures")
    op.drop_index(op.f("ix_sign_in_failures_client"), table_name="sign_in_failures")
    op.drop_table("sign_in_failures")
    op.drop_index(op.f("ix_slack_replays_seen_at"), table_name="slack_replays")
    op.drop_table("slack_replays")
