"""The ``docpipe`` Typer app, its consoles and the options and checks commands share."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from workers.settings import Settings, get_settings

if TYPE_CHECKING:
    from pipelines import Pipeline

#: Help in Click's plain layout: it wraps option names, defaults and help text at the
#: terminal's width, where Typer's rich panels cut them ("--limit-window-seco…").
HELP_MARKUP: Any = None
app = typer.Typer(help="docpipe: durable document pipelines on the OpenAI Responses API.",
                  no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=HELP_MARKUP)
console = Console()
# Messages name paths and commands to copy: never break a line inside them.
err = Console(stderr=True, soft_wrap=True)

#: The run paused (a budget, a quota, a key, a model, Ctrl-C is 130).
EXIT_PAUSED = 3
#: The run finished, and some of its documents failed.
EXIT_DOCUMENTS_FAILED = 5

PipelineOpt = Annotated[str, typer.Option("--pipeline", "-p", metavar="NAME",
                                          help="Pipeline name.")]
PathsArg = Annotated[list[str], typer.Argument(metavar="PATH",
                                              help="Files, folders or glob patterns.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
BudgetOpt = Annotated[float | None, typer.Option(
    "--budget-usd", min=0, metavar="USD", help="Pause the run before a call that could take "
    "its spend past this many dollars (calls in flight count at their worst case).")]
ModeOpt = Annotated[str, typer.Option(
    "--mode", metavar="live|flex|batch", help="live (standard tier), flex (half price, "
    "slower; refusals for lack of capacity are retried) or batch (the Batch API: half "
    "price, within 24 hours; sent and collected by beat).")]
DeadlineOpt = Annotated[float | None, typer.Option(
    "--deadline-hours", min=0, metavar="HOURS", help="Batch mode: the run must be done this "
    "many hours from now. An item a new 24-hour batch could not bring back in time is sent "
    "live instead.")]
StrictOpt = Annotated[bool, typer.Option(
    "--strict", help="Refuse a pipeline whose model docpipe does not know (its parameters "
    "and limits cannot be checked), instead of warning.")]
LogFormatOpt = Annotated[str | None, typer.Option(
    "--log-format", metavar="text|json", help="text or json (one object a line, with run, "
    "item and request ids); sets DOCPIPE_LOG_FORMAT for the processes this command starts.")]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one line naming what is wrong; return the exit to raise."""
    err.print(f"[red]docpipe:[/red] {message}")
    return typer.Exit(code)


def checked_pipeline(name: str, current: Settings, *, strict: bool = False,
                     budget_usd: float | None = None) -> Pipeline:
    """The pipeline called ``name``, checked before anything starts: a model docpipe does
    not know warns (``--strict`` refuses it), and a budget needs the model's price."""
    from pipelines import get_pipeline
    from workers.llm.pricing import price_table

    chosen = get_pipeline(name, current.pipelines)
    if chosen.model_warning is not None:
        if strict:
            raise fail(f"{chosen.source}: model: {chosen.model_warning}; --strict refuses it")
        err.print(f"[yellow]warning:[/yellow] pipeline {chosen.name}: {chosen.model_warning}")
    if budget_usd is not None:
        price_table(current).require(chosen.model)
    return chosen


def checked_mode(mode: str, *, allowed: tuple[str, ...] = ("live", "flex", "batch"),
                 budget_usd: float | None = None) -> str:
    """``--mode``, refused where it does not apply."""
    if mode not in allowed:
        raise fail(f"--mode takes {', '.join(allowed)} here, not {mode!r}")
    if mode == "batch" and budget_usd is not None:
        raise fail("--budget-usd is not enforced for batch runs yet; run without it, or use "
                   "--mode flex (also half price) with a budget")
    return mode


def deadline(hours: float | None, mode: str) -> datetime | None:
    """``--deadline-hours`` as an instant; batch mode only."""
    if hours is None:
        return None
    if mode != "batch":
        raise fail("--deadline-hours applies to --mode batch only")
    return datetime.now(UTC) + timedelta(hours=hours)


def money(amount: float | None) -> Decimal | None:
    """A dollar option as an exact amount."""
    return None if amount is None else Decimal(str(amount))


DebugOpt = Annotated[bool, typer.Option(
    "--debug", help="On a failure, show its full traceback instead of one line (also "
    "DOCPIPE_DEBUG=1).")]


@app.callback()
def _global(log_format: LogFormatOpt = None, debug: DebugOpt = False) -> None:
    """docpipe: durable document pipelines on the OpenAI Responses API."""
    if debug:
        os.environ["DOCPIPE_DEBUG"] = "1"
    if log_format is not None:
        if log_format not in ("text", "json"):
            raise fail(f"--log-format takes text or json, not {log_format!r}")
        # Through the environment, so worker, beat and Flower children log the same way.
        os.environ["DOCPIPE_LOG_FORMAT"] = log_format
        get_settings.cache_clear()
    from workers.ops import logs

    logs.configure(settings().log_format, level=logging.WARNING)


def settings() -> Settings:
    """The settings, or one line saying which is invalid."""
    try:
        return get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"DOCPIPE_{'_'.join(str(part) for part in problem['loc']).upper()}: "
            f"{problem['msg'].removeprefix('Value error, ')}" for problem in exc.errors())
        raise fail(f"invalid settings: {problems}") from exc


def waiting_check(run_id: int, current: Settings) -> Callable[[Any], str | None]:
    """What tells a view of run ``run_id`` why the run waits (no consumer, no beat)."""
    from workers.ops.waiting import WaitingCheck, consumed_queues

    return WaitingCheck(run_id, inspect=lambda: consumed_queues(current.effective_broker_url),
                        batch_tick_seconds=current.batch_poll_seconds)


def run_ended(run_id: int, *, status: str, documents_failed: int,
              to: Console | None = None) -> typer.Exit:
    """Name a run's failed documents; the exit of a command that waited for the run: 0 when
    every document succeeded, :data:`EXIT_PAUSED`, or :data:`EXIT_DOCUMENTS_FAILED`."""
    show_failures(run_id, documents_failed, to=to)
    if status != "finished":
        return typer.Exit(EXIT_PAUSED)
    return typer.Exit(EXIT_DOCUMENTS_FAILED if documents_failed else 0)


def show_failures(run_id: int, total: int, *, to: Console | None = None) -> None:
    """The run's first failed documents and how to list the rest (nothing if none)."""
    if not total:
        return
    from workers.db import repository as repo
    from workers.db.session import session_scope
    from workers.ops import tables

    with session_scope() as session:
        rows = repo.failed_documents(session, run_id, limit=tables.FAILED_SHOWN)
    for line in tables.failures(run_id, rows, total):
        (to or console).print(line, markup=False, highlight=False, soft_wrap=True)


def migrated(current: Settings, *, auto: bool = False) -> Settings:
    """Refuse to go on against a database whose schema is behind (the embedded one is
    upgraded when ``auto``)."""
    from workers.db.migrations import upgrade
    from workers.db.session import ensure_migrated

    if auto and current.uses_default_database:
        upgrade(current.database_url)
    ensure_migrated(current.database_url)
    return current
