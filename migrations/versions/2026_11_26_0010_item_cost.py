"""items.calls and items.cost_usd: the item's finished attempts and their cost, kept as written

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("calls", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("cost_usd", sa.Numeric(18, 9), nullable=False,
                                   server_default="0"))
    # The items that already made calls: their figures from the attempts they have (a call
    # still in flight is counted when it is recorded).
    op.execute("""
        UPDATE items SET
            calls = (SELECT count(*) FROM attempts WHERE attempts.item_id = items.id
                     AND attempts.outcome <> 'in_flight'),
            cost_usd = (SELECT coalesce(sum(attempts.cost_usd), 0) FROM attempts
                        WHERE attempts.item_id = items.id)
        WHERE EXISTS (SELECT 1 FROM attempts WHERE attempts.item_id = items.id)
    """)


def downgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.drop_column("cost_usd")
        batch.drop_column("calls")
