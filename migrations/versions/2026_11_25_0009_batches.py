"""The Batch API: batches sent for a run, the batch an item waits in, a run's deadline, and
items of a batch run sent live to meet it

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 23:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("provider_batch_id", sa.String(length=100), nullable=True),
        sa.Column("input_file_id", sa.String(length=100), nullable=True),
        sa.Column("output_file_id", sa.String(length=100), nullable=True),
        sa.Column("error_file_id", sa.String(length=100), nullable=True),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("input_bytes", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_batches_run_id_runs",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_batches"),
    )
    op.create_index("ix_batches_run_id", "batches", ["run_id"])
    op.create_index("ix_batches_status", "batches", ["status"])
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("send_live", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("batch_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_items_batch_id_batches", "batches", ["batch_id"], ["id"],
                                 ondelete="SET NULL")
        batch.create_index("ix_items_batch_id", ["batch_id"])


def downgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.drop_index("ix_items_batch_id")
        batch.drop_constraint("fk_items_batch_id_batches", type_="foreignkey")
        batch.drop_column("batch_id")
        batch.drop_column("send_live")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("deadline_at")
    op.drop_index("ix_batches_status", table_name="batches")
    op.drop_index("ix_batches_run_id", table_name="batches")
    op.drop_table("batches")
