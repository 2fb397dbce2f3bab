"""Alembic, driven from code: the CLI, the tests and the run command share it.

Alembic is imported only by the functions that migrate: importing it and loading the
migration scripts took 1.2 s of every ``docpipe status``, which only needs to know that the
schema is current (see :data:`HEAD_REVISION`).
"""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config

#: The newest revision in ``migrations/versions``. ``tests/migrations`` holds it to Alembic's
#: head, so a new migration that does not move it fails there.
HEAD_REVISION = "0014"


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at docpipe's migrations and the database ``url``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(files("migrations")))
    config.attributes["sqlalchemy.url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision``."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision``."""
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    """The newest revision docpipe ships, as Alembic finds it in the migration scripts."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return script.get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None if it has no docpipe schema."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def stored_revision(engine: Engine) -> str | None:
    """What :func:`current_revision` says, read from ``alembic_version`` without Alembic."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        revisions = list(connection.scalars(text("SELECT version_num FROM alembic_version")))
    return revisions[0] if len(revisions) == 1 else None
