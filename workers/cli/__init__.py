"""The ``docpipe`` command line: parsing and wiring only.

Each module holds one group of commands; what they do lives in the runtime (``workers.runs``
for run operations, ``workers.ops`` for what is shown).
"""

from __future__ import annotations

import sys

from pipelines import PipelineError
from workers.cli import db, inspect, local, pipelines, runs, services
from workers.cli.app import app, err
from workers.errors import ConfigurationError

__all__ = ["app", "main"]
_COMMANDS = (db, inspect, local, pipelines, runs, services)  # imported to register them


def main() -> None:
    """Entry point of the ``docpipe`` console script."""
    try:
        app()
    except (ConfigurationError, PipelineError) as exc:
        err.print(f"[red]docpipe:[/red] {exc}")
        sys.exit(2)
