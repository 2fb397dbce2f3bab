"""Long documents: items form a tree of chunks and reduces (level, parent, text span)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("level", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("text_start", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("text_end", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_items_parent_id_items", "items", ["parent_id"], ["id"],
                                 ondelete="CASCADE")
        batch.create_index("ix_items_parent_id", ["parent_id"])


def downgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.drop_index("ix_items_parent_id")
        batch.drop_constraint("fk_items_parent_id_items", type_="foreignkey")
        batch.drop_column("text_end")
        batch.drop_column("text_start")
        batch.drop_column("parent_id")
        batch.drop_column("level")
