"""``docpipe db``: the schema."""

from __future__ import annotations

import typer

from workers.cli.app import HELP_MARKUP, app, console, settings

db_app = typer.Typer(help="Database schema.", no_args_is_help=True, rich_markup_mode=HELP_MARKUP)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply the migrations to the configured database."""
    from workers.db.migrations import current_revision, upgrade
    from workers.db.session import get_engine

    upgrade(settings().database_url, revision)
    console.print(f"database at revision {current_revision(get_engine())}")


@db_app.command("current", short_help="Print the schema revision, and the one needed.")
def db_current() -> None:
    """Print the database's schema revision and the one this docpipe needs."""
    from workers.db.migrations import current_revision, head_revision
    from workers.db.session import get_engine

    settings()
    console.print(f"current: {current_revision(get_engine())}  head: {head_revision()}")
