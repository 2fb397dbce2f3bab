"""worker_processes (heartbeats) and items.holder: a dead worker is noticed in seconds

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "worker_processes",
        sa.Column("id", sa.String(100), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_worker_processes")),
    )
    op.create_index("ix_worker_processes_beat_at", "worker_processes", ["beat_at"])
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("holder", sa.String(100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.drop_column("holder")
    op.drop_index("ix_worker_processes_beat_at", table_name="worker_processes")
    op.drop_table("worker_processes")
