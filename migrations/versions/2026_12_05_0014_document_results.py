"""run_duplicates, attempts.simulated and the document_results view: one row a document

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A run's calls summed per document: a long document's chunks and reduces are one document.
_USAGE = """
    SELECT a.run_id, i.document_id,
           count(*) FILTER (WHERE a.outcome != 'in_flight') AS calls,
           sum(a.input_tokens) AS input_tokens, sum(a.cached_tokens) AS cached_tokens,
           sum(a.output_tokens) AS output_tokens,
           sum(a.reasoning_tokens) AS reasoning_tokens, sum(a.cost_usd) AS cost_usd,
           sum(a.latency_ms) AS latency_ms,
           max(CASE WHEN a.simulated THEN 1 ELSE 0 END) AS simulated
    FROM attempts a JOIN items i ON i.id = a.item_id
    GROUP BY a.run_id, i.document_id
"""

VIEW = f"""
CREATE VIEW document_results AS
SELECT t.run_id, t.id AS item_id, t.source, CAST(NULL AS TEXT) AS duplicate_of,
       d.content_hash, t.status, t.last_error_class AS error_class,
       t.last_error_code AS error_code, t.last_error_message AS error_message, t.reused,
       coalesce(u.calls, 0) AS calls, coalesce(u.input_tokens, 0) AS input_tokens,
       coalesce(u.cached_tokens, 0) AS cached_tokens,
       coalesce(u.output_tokens, 0) AS output_tokens,
       coalesce(u.reasoning_tokens, 0) AS reasoning_tokens,
       coalesce(u.cost_usd, 0) AS cost_usd, coalesce(u.latency_ms, 0) AS latency_ms,
       coalesce(u.simulated, 0) = 1 AS simulated,
       r.model, r.pipeline, r.pipeline_version, res.output
FROM items t
JOIN runs r ON r.id = t.run_id
LEFT JOIN documents d ON d.id = t.document_id
LEFT JOIN results res ON res.id = t.result_id
LEFT JOIN ({_USAGE}) u ON u.run_id = t.run_id AND u.document_id = t.document_id
WHERE t.parent_id IS NULL
UNION ALL
SELECT t.run_id, t.id, dup.source, t.source, d.content_hash, t.status, t.last_error_class,
       t.last_error_code, t.last_error_message, t.reused, 0, 0, 0, 0, 0, 0, 0,
       coalesce(u.simulated, 0) = 1, r.model, r.pipeline, r.pipeline_version, res.output
FROM run_duplicates dup
JOIN items t ON t.run_id = dup.run_id AND t.document_id = dup.document_id
    AND t.parent_id IS NULL
JOIN runs r ON r.id = t.run_id
LEFT JOIN documents d ON d.id = t.document_id
LEFT JOIN results res ON res.id = t.result_id
LEFT JOIN ({_USAGE}) u ON u.run_id = t.run_id AND u.document_id = t.document_id
"""


def upgrade() -> None:
    op.create_table(
        "run_duplicates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_duplicates")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE",
                                name=op.f("fk_run_duplicates_run_id_runs")),
        sa.ForeignKeyConstraint(["document_id"], ["documents.id"],
                                name=op.f("fk_run_duplicates_document_id_documents")),
        sa.UniqueConstraint("run_id", "source", name=op.f("uq_run_duplicates_run_id_source")),
    )
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("simulated", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    op.execute(VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW document_results")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("simulated")
    op.drop_table("run_duplicates")
