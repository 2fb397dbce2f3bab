"""runs.sources and runs.ingested_at: an ingest cut off at any point can be finished

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column(
            "sources", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True))
        batch.add_column(sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=True))
    # Runs already past ingest were ingested whole.
    op.execute("UPDATE runs SET ingested_at = created_at WHERE status != 'ingesting'")


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("ingested_at")
        batch.drop_column("sources")
