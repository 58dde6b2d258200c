"""Thresholds, escalation and reminders: a request keeps its rule's quorum.any_of, escalations and reminder
interval, how many escalations were announced, when it was last reminded and when the next notice is due; a vote
keeps the groups its approver had.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("approval_requests") as batch:
        batch.add_column(sa.Column("thresholds", sa.String(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("escalate", sa.String(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("remind_seconds", sa.Float(), nullable=True))
        batch.add_column(sa.Column("escalated", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("notice_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_approval_requests_notice_at", ["notice_at"], unique=False)
    with op.batch_alter_table("approval_decisions") as batch:
        batch.add_column(sa.Column("groups", sa.String(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("approval_decisions") as batch:
        batch.drop_column("groups")
    with op.batch_alter_table("approval_requests") as batch:
        batch.drop_index("ix_approval_requests_notice_at")
        batch.drop_column("notice_at")
        batch.drop_column("reminded_at")
        batch.drop_column("escalated")
        batch.drop_column("remind_seconds")
        batch.drop_column("escalate")
        batch.drop_column("thresholds")
