"""The ``docpipe`` command line: parsing and wiring only.

Each module holds one group of commands; what they do lives in the runtime (``workers.runs``
for run operations, ``workers.ops`` for what is shown).
"""

from __future__ import annotations

import os
import sys

from pipelines import PipelineError
from workers.cli import db, inspect, local, pipelines, runs, services
from workers.cli.app import app, err
from workers.errors import (
    ConfigurationError,
    IngestCutOff,
    RunInterrupted,
    RunNotFound,
    brief,
)
from workers.runtime.failures import EXIT_SERVICE, explain, scrubbed
from workers.settings import DEFAULT_DATABASE_URL, Settings, get_settings

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_NOT_FOUND", "EXIT_SERVICE", "EXIT_USAGE",
           "app", "main"]
_COMMANDS = (db, inspect, local, pipelines, runs, services)  # imported to register them

#: An error docpipe did not expect: a bug, or a failure it does not yet explain.
EXIT_FAILED = 1
#: The run named does not exist (every command that takes a run id says so the same way).
EXIT_NOT_FOUND = 1
#: A command, option, setting or pipeline that docpipe cannot run with.
EXIT_USAGE = 2
#: Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


def main() -> None:
    """Entry point of the ``docpipe`` console script: every failure that escapes a command
    ends here, as one line (the full traceback with ``--debug``)."""
    try:
        app()
    except Exception as exc:  # the one place failures become lines
        if os.environ.get("DOCPIPE_DEBUG") == "1":
            raise
        current = _settings()
        line, code = _described(exc, current)
        err.print(f"[red]docpipe:[/red] {scrubbed(line, current)}", markup=True,
                  highlight=False)
        sys.exit(code)


def _described(exc: Exception, current: Settings) -> tuple[str, int]:
    """The line and exit code for a failure."""
    cut = exc if isinstance(exc, IngestCutOff) else None
    cause = exc.__cause__ if cut is not None and isinstance(exc.__cause__, Exception) else exc
    if cut is not None and cut.interrupted:
        return f"interrupted; {cut.hint}", EXIT_INTERRUPTED
    if isinstance(exc, RunInterrupted):
        return str(exc), EXIT_INTERRUPTED
    if isinstance(exc, RunNotFound):
        return str(exc), EXIT_NOT_FOUND
    if isinstance(cause, (ConfigurationError, PipelineError)):
        line, code = str(cause), EXIT_USAGE
    elif (failure := explain(cause, current)) is not None:
        line, code = failure.line(), EXIT_SERVICE
    else:
        line, code = (f"unexpected error: {brief(cause)} (run again with --debug for the "
                      "traceback, and report it)"), EXIT_FAILED
    return (f"{line}; {cut.hint}" if cut is not None else line), code


def _settings() -> Settings:
    """The settings to explain a failure with, even when they are what failed to load."""
    try:
        return get_settings()
    except Exception:  # the URLs are all a line needs
        return Settings.model_construct(
            database_url=os.environ.get("DOCPIPE_DATABASE_URL", DEFAULT_DATABASE_URL),
            broker_url=os.environ.get("DOCPIPE_BROKER_URL"),
            openai_base_url=os.environ.get("OPENAI_BASE_URL"))
