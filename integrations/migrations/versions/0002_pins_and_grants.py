"""Tool pins (drift detection), time-boxed grants, and the grant bound an approval request carries.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("approval_requests") as batch:
        batch.add_column(sa.Column("grant_max", sa.Float(), nullable=True))

    op.create_table(
        "tool_pins",
        sa.Column("server", sa.String(length=64), nullable=False),
        sa.Column("tool", sa.String(length=256), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("definition", sa.String(), nullable=False),
        sa.Column("policy_version", sa.String(length=64), nullable=False),
        sa.Column("pinned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("drift_digest", sa.String(length=64), nullable=True),
        sa.Column("drift_definition", sa.String(), nullable=True),
        sa.Column("drifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("server", "tool"),
    )

    op.create_table(
        "grants",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("server", sa.String(length=64), nullable=False),
        sa.Column("tool", sa.String(length=256), nullable=False),
        sa.Column("identity", sa.String(length=128), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("rule", sa.String(length=512), nullable=False),
        sa.Column("policy_version", sa.String(length=64), nullable=False),
        sa.Column("granted_by", sa.String(length=128), nullable=False),
        sa.Column("comment", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.String(length=128), nullable=True),
        sa.Column("end_reason", sa.String(), nullable=True),
        sa.ForeignKeyConstraint(["request_id"], ["approval_requests.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    for column in ("server", "tool", "identity", "request_id", "expires_at", "status"):
        op.create_index(f"ix_grants_{column}", "grants", [column])


def downgrade() -> None:
    op.drop_table("grants")
    op.drop_table("tool_pins")
    with op.batch_alter_table("approval_requests") as batch:
        batch.drop_column("grant_max")
