"""Alembic, driven from code: the CLI, the tests and the run command share it."""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at docpipe's migrations and the database ``url``."""
    config = Config()
    config.set_main_option("script_location", str(files("migrations")))
    config.attributes["sqlalchemy.url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision``."""
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    """The newest revision docpipe ships."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return script.get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None if it has no docpipe schema."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
