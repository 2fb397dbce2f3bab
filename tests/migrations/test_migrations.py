"""Alembic is the only source of the schema: the models must agree with it on both engines."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from workers.db.migrations import (
    HEAD_REVISION,
    current_revision,
    downgrade,
    head_revision,
    stored_revision,
    upgrade,
)
from workers.db.models import Base
from workers.db.session import ensure_migrated
from workers.errors import DatabaseNotMigrated

TABLES = {"attachments", "batches", "documents", "runs", "items", "attempts", "results",
          "alembic_version"}


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
