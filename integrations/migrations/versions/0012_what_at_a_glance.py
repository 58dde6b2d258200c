"""What an approver needs at a glance: the tool's own description (from the upstream's `tools/list`) kept with the
request, and until when a call is held open waiting on it (`held_until`), so a decision can say truthfully whether
the agent is still waiting (it runs now) or was told to call again.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("approval_requests") as batch:
        batch.add_column(sa.Column("tool_description", sa.String(), nullable=True))
        batch.add_column(sa.Column("held_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("approval_requests") as batch:
        batch.drop_column("held_until")
        batch.drop_column("tool_description")
