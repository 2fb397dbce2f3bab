"""Scheduled runs and run modes: the schedule that started a run (at most one unfinished run
per schedule), and whether its calls go at the standard or the flex tier

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 23:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED = sa.text("schedule IS NOT NULL AND status != 'finished'")


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("schedule", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("mode", sa.String(length=10), nullable=False,
                                   server_default="live"))
    # The lock: a second unfinished run of the same schedule cannot be inserted.
    op.create_index("uq_runs_unfinished_schedule", "runs", ["schedule"], unique=True,
                    postgresql_where=UNFINISHED, sqlite_where=UNFINISHED)


def downgrade() -> None:
    op.drop_index("uq_runs_unfinished_schedule", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("mode")
        batch.drop_column("schedule")
