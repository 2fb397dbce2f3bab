"""Run budgets: runs.budget_usd with spent and reserved counters, attempts.reserved_usd

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 20:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(precision=18, scale=9)


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("budget_usd", MONEY, nullable=True))
        batch.add_column(sa.Column("spent_usd", MONEY, nullable=False, server_default="0"))
        batch.add_column(sa.Column("reserved_usd", MONEY, nullable=False, server_default="0"))
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("reserved_usd", MONEY, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("reserved_usd")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("reserved_usd")
        batch.drop_column("spent_usd")
        batch.drop_column("budget_usd")
