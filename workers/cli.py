"""The ``docpipe`` command line."""

from __future__ import annotations

import atexit
import csv
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pipelines import PipelineError, get_pipeline, list_pipelines
from workers.errors import ConfigurationError
from workers.settings import Settings, get_settings

app = typer.Typer(help="docpipe: durable document pipelines on the OpenAI Responses API.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
pipelines_app = typer.Typer(help="The pipelines: built in, and from DOCPIPE_PIPELINES.")
app.add_typer(pipelines_app, name="pipelines")
console = Console()
# Messages name paths and commands to copy: never break a line inside them.
err = Console(stderr=True, soft_wrap=True)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "documents"
SIMULATOR_KEY = "sk-docpipe-simulator"
EXIT_PAUSED = 3

PipelineOpt = Annotated[str, typer.Option("--pipeline", "-p", help="Pipeline name.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
BudgetOpt = Annotated[float | None, typer.Option(
    "--budget-usd", min=0, help="Pause the run before a call that could take its spend past "
    "this many dollars (calls in flight count at their worst case).")]


ModeOpt = Annotated[str, typer.Option(
    "--mode", help="live (standard tier), flex (half price, slower; refusals for lack of "
    "capacity are retried) or batch (the Batch API: half price, within 24 hours; sent and "
    "collected by beat).")]


def _mode(mode: str, *, allowed: tuple[str, ...] = ("live", "flex", "batch"),
          budget_usd: float | None = None) -> str:
    if mode not in allowed:
        err.print(f"[red]docpipe:[/red] --mode takes {', '.join(allowed)} here, not {mode!r}")
        raise typer.Exit(2)
    if mode == "batch" and budget_usd is not None:
        err.print("[red]docpipe:[/red] --budget-usd is not enforced for batch runs yet; "
                  "run without it, or use --mode flex (also half price) with a budget")
        raise typer.Exit(2)
    return mode


DeadlineOpt = Annotated[float | None, typer.Option(
    "--deadline-hours", min=0, help="Batch mode: the run must be done this many hours from "
    "now. An item a new 24-hour batch could not bring back in time is sent live instead.")]


def _deadline(hours: float | None, mode: str) -> datetime | None:
    if hours is None:
        return None
    if mode != "batch":
        err.print("[red]docpipe:[/red] --deadline-hours applies to --mode batch only")
        raise typer.Exit(2)
    from datetime import timedelta

    return datetime.now(UTC) + timedelta(hours=hours)


def _money(amount: float | None) -> Decimal | None:
    return None if amount is None else Decimal(str(amount))


def main() -> None:
    """Entry point of the ``docpipe`` console script."""
    try:
        app()
    except (ConfigurationError, PipelineError) as exc:
        err.print(f"[red]docpipe:[/red] {exc}")
        sys.exit(2)


LogFormatOpt = Annotated[str | None, typer.Option(
    "--log-format", help="text or json (one object a line, with run, item and request ids); "
    "sets DOCPIPE_LOG_FORMAT for the processes this command starts.")]


@app.callback()
def _global(log_format: LogFormatOpt = None) -> None:
    """docpipe: durable document pipelines on the OpenAI Responses API."""
    if log_format is not None:
        if log_format not in ("text", "json"):
            err.print(f"[red]docpipe:[/red] --log-format takes text or json, not {log_format!r}")
            raise typer.Exit(2)
        # Through the environment, so worker, beat and Flower children log the same way.
        os.environ["DOCPIPE_LOG_FORMAT"] = log_format
        get_settings.cache_clear()
    from workers.ops import logs

    logs.configure(_settings().log_format, level=logging.WARNING)


def _settings() -> Settings:
    try:
        return get_settings()
    except ValueError as exc:
        err.print(f"[red]docpipe: invalid settings:[/red] {exc}")
        raise typer.Exit(2) from exc


def _migrated(settings: Settings, *, auto: bool = False) -> None:
    from workers.db.migrations import upgrade
    from workers.db.session import ensure_migrated

    if auto and settings.uses_default_database:
        upgrade(settings.database_url)
    ensure_migrated(settings.database_url)


# -- db ---------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply the migrations to the configured database."""
    from workers.db.migrations import current_revision, upgrade
    from workers.db.session import get_engine

    settings = _settings()
    upgrade(settings.database_url, revision)
    console.print(f"database at revision {current_revision(get_engine())}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's schema revision and the one this docpipe needs."""
    from workers.db.migrations import current_revision, head_revision
    from workers.db.session import get_engine

    _settings()
    console.print(f"current: {current_revision(get_engine())}  head: {head_revision()}")


# -- pipelines --------------------------------------------------------------------------------


@pipelines_app.callback(invoke_without_command=True)
def pipelines_cmd(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the pipelines with their models, versions and where they are defined."""
    if ctx.invoked_subcommand is not None:
        return
    rows = [{"name": p.name, "version": p.version, "model": p.model,
             "max_output_tokens": p.max_output_tokens, "description": p.description,
             "source": p.source}
            for p in list_pipelines(_settings().pipelines)]
    if as_json:
        console.print_json(data=rows)
        return
    table = Table("name", "version", "model", "source", "description")
    for row in rows:
        table.add_row(*(str(row[k]) for k in ("name", "version", "model", "source",
                                              "description")))
    console.print(table)


@pipelines_app.command("show")
def pipelines_show(name: Annotated[str, typer.Argument(help="The pipeline's name.")]) -> None:
    """Print a pipeline's request as sent (a placeholder for the document) and its schema."""
    chosen = get_pipeline(name, _settings().pipelines)
    body = chosen.request("{document text}")
    console.print_json(data={"name": chosen.name, "version": chosen.version,
                             "source": chosen.source, "request": body})


# -- ingest, worker, run ----------------------------------------------------------------------


@app.command("ingest")
def ingest_cmd(
    paths: Annotated[list[str], typer.Argument(help="Files, folders or glob patterns.")],
    pipeline: PipelineOpt = "summarise",
    queue: Annotated[str, typer.Option(help="Queue for the run's items.")] = "docpipe.live",
    budget_usd: BudgetOpt = None,
    mode: ModeOpt = "live",
    deadline_hours: DeadlineOpt = None,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Then show the run's progress until it finishes or pauses (exit 3 if "
        "paused). Workers must be running.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Record documents and items for a new run and enqueue them; print the run id."""
    settings = _settings()
    _migrated(settings)
    chosen = get_pipeline(pipeline, settings.pipelines)
    from workers.runs.ingest import ingest
    from workers.runtime.tasks import send_items

    report = ingest(paths, chosen, settings=settings, publish=send_items, queue=queue,
                    budget_usd=_money(budget_usd), mode=_mode(mode, budget_usd=budget_usd),
                    deadline_at=_deadline(deadline_hours, mode))
    if as_json:
        console.print_json(data=report.as_dict())
    else:
        console.print(f"run {report.run_id}: {report.items} items queued, {report.duplicates} "
                      f"duplicates skipped, {report.unreadable} unreadable")
    if wait:
        from workers.ops import monitor

        final = monitor.watch(report.run_id, console=err if as_json else console)
        raise typer.Exit(0 if final.status == "finished" else EXIT_PAUSED)


@app.command("reprocess")
def reprocess_cmd(
    pipeline: PipelineOpt = "summarise",
    only: Annotated[list[str] | None, typer.Option(
        "--only", help="missing (never processed), outdated (by an older version) or failed; "
        "repeat for more. Default: all three.")] = None,
    since: Annotated[datetime | None, typer.Option(
        help="Only documents first stored at or after this date or time (UTC).")] = None,
    where: Annotated[str | None, typer.Option(
        help="Only documents whose source matches this glob, e.g. '*/invoices/*.pdf'.")] = None,
    queue: Annotated[str, typer.Option(help="Queue for the run's items.")] = "docpipe.nightly",
    budget_usd: BudgetOpt = None,
    mode: ModeOpt = "live",
    deadline_hours: DeadlineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a pipeline over the stored documents its current version has no result for."""
    from workers.runs.reprocess import REASONS, reprocess
    from workers.runtime.tasks import send_items

    chosen_reasons = tuple(only or REASONS)
    if unknown := sorted(set(chosen_reasons) - set(REASONS)):
        err.print(f"[red]docpipe:[/red] --only takes {', '.join(REASONS)}; not {unknown}")
        raise typer.Exit(2)
    settings = _settings()
    _migrated(settings)
    chosen = get_pipeline(pipeline, settings.pipelines)
    report = reprocess(chosen, publish=send_items, queue=queue,
                       only=chosen_reasons,  # type: ignore[arg-type]
                       since=since.replace(tzinfo=UTC) if since and since.tzinfo is None
                       else since, where=where, budget_usd=_money(budget_usd),
                       mode=_mode(mode, budget_usd=budget_usd),
                       deadline_at=_deadline(deadline_hours, mode))
    if as_json:
        console.print_json(data=report.as_dict())
        return
    taken = ", ".join(f"{n} {reason}" for reason, n in sorted(report.selected.items()))
    skipped = ", ".join(f"{n} {reason.replace('_', ' ')}"
                        for reason, n in sorted(report.skipped.items())) or "none"
    if report.run_id is None:
        console.print(f"nothing to reprocess for {chosen.name} {chosen.version}; "
                      f"skipped: {skipped}")
    else:
        console.print(f"run {report.run_id}: {report.items} documents queued ({taken}); "
                      f"skipped: {skipped}")


@app.command("cancel")
def cancel_cmd(run_id: Annotated[int, typer.Argument(help="Run id.")],
               as_json: JsonOpt = False) -> None:
    """Stop a run: items not yet sent fail as cancelled, its open batches are cancelled.

    Calls in flight finish and are kept (they are paid for); so are the lines a cancelled
    batch completed before it stopped.
    """
    settings = _settings()
    _migrated(settings)
    from workers.db import repository as repo
    from workers.db.session import session_scope

    with session_scope() as session:
        if repo.get_run(session, run_id) is None:
            err.print(f"[red]docpipe:[/red] no run {run_id}")
            raise typer.Exit(2)
        open_batches = repo.cancel_run(session, run_id)
    cancelled: list[str] = []
    if open_batches:
        from workers.llm.client import get_client

        sdk = get_client(settings).sdk
        for provider_id in open_batches:
            sdk.batches.cancel(provider_id)
            cancelled.append(provider_id)
    with session_scope() as session:
        report = repo.run_report(session, run_id)
    assert report is not None
    if as_json:
        console.print_json(data={"run_id": run_id, "status": report.status,
                                 "batches_cancelled": cancelled})
        return
    console.print(f"run {run_id} cancelled ({report.status}); batches cancelled: "
                  f"{len(cancelled)}")


@app.command("estimate")
def estimate_cmd(
    paths: Annotated[list[str], typer.Argument(help="Files, folders or glob patterns.")],
    pipeline: PipelineOpt = "summarise",
    as_json: JsonOpt = False,
) -> None:
    """Predict the tokens and dollars of a run before anything is sent."""
    settings = _settings()
    chosen = get_pipeline(pipeline, settings.pipelines)
    from sqlalchemy.exc import OperationalError

    from workers.errors import ConfigurationError
    from workers.runs.estimate import estimate
    from workers.runs.pricing import price_table, usd
    from workers.settings import DEFAULT_DATABASE_FILE

    try:
        if settings.uses_default_database and not DEFAULT_DATABASE_FILE.exists():
            raise ConfigurationError("no embedded database yet")  # do not create one
        _migrated(settings)
        use_database = True
    except (ConfigurationError, OperationalError):
        use_database = False  # no history and no reuse to count: estimate the rest
        err.print("[dim]no docpipe database here: not counting results to reuse[/dim]")
    result = estimate(paths, chosen, settings=settings, prices=price_table(settings),
                      use_database=use_database)
    if as_json:
        console.print_json(data=result.as_dict())
        return
    console.print(f"{result.documents} documents ({result.duplicates} duplicates, "
                  f"{result.already_done} already done for version {result.pipeline_version}) "
                  f"and {result.unreadable} unreadable: {result.to_call} calls to "
                  f"{result.model}")
    console.print(f"input: {result.input_tokens:,} tokens (o200k_base, counted)   output: at "
                  f"most {result.max_output_tokens:,} tokens (max_output_tokens each)")
    if not result.priced:
        console.print(f"[yellow]no price for {result.model}: set DOCPIPE_PRICES[/yellow]")
        return
    if result.expected_usd is not None and result.typical_output_tokens is not None:
        console.print(f"expected: {usd(result.expected_usd)} (output like the "
                      f"{result.calls_seen} calls made so far: "
                      f"{result.typical_output_tokens:.0f} tokens each)")
    console.print(f"at most: {usd(result.ceiling_usd)}, or {usd(result.ceiling_batch_usd)} "
                  "through the Batch API")


@app.command("beat")
def beat_cmd() -> None:
    """Run Celery beat: the reconciler every few seconds, and the configured schedules.

    Run exactly one per fleet. Its state file (``DOCPIPE_BEAT_SCHEDULE_FILE``) survives
    restarts, so a restart neither skips nor repeats a nightly run.
    """
    settings = _settings()
    _migrated(settings)
    from workers.runtime.celery_app import app as celery_app

    settings.beat_schedule_file.parent.mkdir(parents=True, exist_ok=True)
    celery_app.start(["beat", "--schedule", str(settings.beat_schedule_file),
                      "--loglevel", "INFO"])


@app.command("worker", context_settings={"allow_extra_args": True,
                                         "ignore_unknown_options": True})
def worker_cmd(
    ctx: typer.Context,
    queues: Annotated[str, typer.Option("--queues", "-Q", help="Queues to consume.")] =
    "docpipe.live,docpipe.nightly,docpipe.control",
    beat: Annotated[bool, typer.Option(
        help="Also run beat (the reconciler) in this worker: for one-machine setups. "
        "Run exactly one beat per fleet.")] = False,
) -> None:
    """Run docpipe's workers: one process per core (``DOCPIPE_WORKER_PROCESSES``), each a
    Celery worker whose event loop keeps ``DOCPIPE_WORKER_CONCURRENCY`` calls in flight.
    Extra options go to ``celery worker``."""
    settings = _settings()
    _migrated(settings)
    from workers.runtime import processes

    supervised = os.environ.get(processes.CHILD_ENV) == "1" and \
        PROMETHEUS_MULTIPROC_ENV in os.environ
    if settings.metrics_port is not None and not supervised:
        # Before anything imports prometheus-client, which reads this once: each process
        # (pool processes, or the engine processes started below) then writes its own
        # metric files there, and one process serves their sum.
        os.environ[PROMETHEUS_MULTIPROC_ENV] = str(_fresh_metrics_dir(settings.metrics_dir))
    if settings.processes > 1 and settings.worker_pool == "threads":
        raise typer.Exit(processes.supervise(
            [*processes.own_command(), "worker", "--queues", queues], ctx.args,
            count=settings.processes, beat=["--beat"] if beat else [],
            env=dict(os.environ)))
    from workers.runtime.celery_app import app as celery_app

    if beat:
        settings.beat_schedule_file.parent.mkdir(parents=True, exist_ok=True)
    argv = ["worker", "--pool", settings.worker_pool, "--concurrency",
            str(settings.pool_concurrency), "-Q", queues, "-E", "--loglevel", "INFO",
            *(["--beat", "--schedule", str(settings.beat_schedule_file)] if beat else []),
            *ctx.args]
    from workers.runtime import liveness

    # app.start rather than worker_main, which drops the exit code: a worker that Celery gave
    # up on must not exit 0, or no supervisor restarts it.
    code: int | None = celery_app.start(argv)
    liveness.restart_after_crash(code)
    raise typer.Exit(int(code or 0))


#: prometheus-client's multiprocess folder (not imported from workers.ops.metrics, which would
#: import prometheus-client before the variable is set).
PROMETHEUS_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _fresh_metrics_dir(base: Path | None) -> Path:
    """An empty folder for this worker's metric files: stale ones would add old counts."""
    if base is None:
        path = Path(tempfile.mkdtemp(prefix="docpipe-metrics-"))
        atexit.register(shutil.rmtree, path, ignore_errors=True)
        return path
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    return base


@app.command("flower")
def flower_cmd(
    no_auth: Annotated[bool, typer.Option(
        "--no-auth", help="Run Flower with no login, allowed only on a loopback address.")]
    = False,
) -> None:
    """Run Flower for docpipe's broker: basic auth, bounded task memory, events on.

    Credentials come from DOCPIPE_FLOWER_USER and DOCPIPE_FLOWER_PASSWORD; without them
    Flower starts only on loopback, and only with --no-auth.
    """
    settings = _settings()
    from workers.ops.flower import launch

    plan = launch(settings, allow_no_auth_on_loopback=no_auth)
    os.environ.update(plan.environ)
    # Flower's own /metrics is one process: it must not write a worker's metric files.
    os.environ.pop(PROMETHEUS_MULTIPROC_ENV, None)
    if not plan.authenticated:
        err.print(f"[yellow]Flower has no login; it listens on {settings.flower_address} "
                  "only[/yellow]")
    from workers.runtime.celery_app import app as celery_app

    raise typer.Exit(int(celery_app.start(plan.argv) or 0))


@app.command("run")
def run_cmd(
    paths: Annotated[list[str], typer.Argument(help="Files, folders or glob patterns.")],
    pipeline: PipelineOpt = "summarise",
    simulate: Annotated[bool, typer.Option(help="Answer with docpipe's simulator.")] = False,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes to start.")] = 1,
    budget_usd: BudgetOpt = None,
    mode: ModeOpt = "live",
) -> None:
    """Ingest, process and report in one go, on this machine."""
    # A batch takes up to 24 hours: start it with `ingest --mode batch` and let beat collect.
    report = _run_foreground(paths, pipeline, simulate=simulate, workers=workers,
                             budget_usd=_money(budget_usd),
                             mode=_mode(mode, allowed=("live", "flex")))
    raise typer.Exit(0 if report.get("status") == "finished" else EXIT_PAUSED)


@app.command("demo")
def demo_cmd(
    pipeline: PipelineOpt = "summarise",
    path: Annotated[Path, typer.Option(help="Documents to run.")] = EXAMPLES,
) -> None:
    """Run the example documents through the simulator and show the results."""
    if not path.exists():
        err.print(f"[red]docpipe:[/red] no example documents at {path}; pass --path")
        raise typer.Exit(2)
    report = _run_foreground([str(path)], pipeline, simulate=True, workers=1)
    from workers.db import repository as repo
    from workers.db.session import session_scope

    table = Table("document", "status", "result", title=f"run {report['run_id']}: {pipeline}",
                  show_lines=True)
    with session_scope() as session:
        for row in repo.iter_item_results(session, report["run_id"]):
            shown = _short_output(row.output) if row.output else \
                f"[red]{row.error_code}[/red]: {row.error_message}"
            table.add_row(Path(row.source.split("#")[0]).name + _record_suffix(row.source),
                          row.status, shown)
    console.print(table)
    raise typer.Exit(0 if report.get("status") == "finished" else EXIT_PAUSED)


def _record_suffix(source: str) -> str:
    return "#" + source.split("#", 1)[1] if "#" in source else ""


def _short_output(output: dict[str, Any]) -> str:
    lines = []
    for key, value in output.items():
        if isinstance(value, list):
            value = ", ".join(v.get("name", str(v)) if isinstance(v, dict) else str(v)
                              for v in value[:4])
        text = str(value)
        lines.append(f"[bold]{key}[/bold]: {text[:160] + ('…' if len(text) > 160 else '')}")
    return "\n".join(lines)


def _run_foreground(paths: list[str], pipeline_name: str, *, simulate: bool, workers: int,
                    budget_usd: Decimal | None = None, mode: str = "live") -> dict[str, Any]:
    settings = _settings()
    chosen = get_pipeline(pipeline_name, settings.pipelines)
    if settings.openai_api_key is None and not simulate:
        err.print("[red]docpipe:[/red] OPENAI_API_KEY is not set. Set it to call the OpenAI "
                  "API, or pass --simulate to use docpipe's simulator (no real model).")
        raise typer.Exit(2)
    _migrated(settings, auto=True)
    from workers.runtime.embedded import child, docpipe_command, embedded_redis, free_port

    with ExitStack() as stack:
        overrides: dict[str, str] = {}
        if settings.broker_url is None:
            overrides["DOCPIPE_BROKER_URL"] = stack.enter_context(embedded_redis())
            console.print(f"[dim]embedded Redis at {overrides['DOCPIPE_BROKER_URL']}[/dim]")
        if simulate:
            port = free_port()
            stack.enter_context(child(docpipe_command("simulator", "--port", str(port)),
                                      port=port, what="simulator"))
            overrides |= {"OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
                          "OPENAI_API_KEY": SIMULATOR_KEY}
            console.print("[yellow]simulated: answers come from docpipe's Responses API "
                          "simulator, not from a model[/yellow]")
        stack.enter_context(_environ(overrides))
        get_settings.cache_clear()
        settings = _settings()
        log_dir = Path(".docpipe")
        log_dir.mkdir(exist_ok=True)
        processes = [
            stack.enter_context(child(
                docpipe_command("worker", "--hostname", f"docpipe{i}@%h"), what="worker",
                log_path=log_dir / "worker.log"))
            for i in range(workers)
        ]
        from workers.runs.ingest import ingest
        from workers.runtime.tasks import send_items

        report = ingest(paths, chosen, settings=settings, publish=send_items,
                        queue="docpipe.live", budget_usd=budget_usd, mode=mode)
        console.print(f"run {report.run_id}: {report.items} items, {report.duplicates} "
                      f"duplicates, {report.unreadable} unreadable")
        final = _follow(report.run_id, settings, processes)
    _print_summary(final, simulated=simulate)
    return final


@contextmanager
def _environ(overrides: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()


def _follow(run_id: int, settings: Settings, processes: list[Any]) -> dict[str, Any]:
    """Show the live view until the run finishes or pauses; reconcile on the way."""
    from workers.ops import monitor
    from workers.runs import reconcile
    from workers.runtime.tasks import send_items

    last_sweep = time.monotonic()

    def tick(_: Any) -> None:
        nonlocal last_sweep
        if not any(p.poll() is None for p in processes):
            raise ConfigurationError(
                "every worker exited; see .docpipe/worker.log. The run is kept: "
                f"`docpipe resume {run_id}` continues it"
            )
        if time.monotonic() - last_sweep > 15:
            reconcile.requeue(run_id, settings=settings, publish=send_items)
            last_sweep = time.monotonic()

    return monitor.watch(run_id, console=console, interval=0.3, on_tick=tick).as_dict()


def _print_summary(report: dict[str, Any], *, simulated: bool) -> None:
    table = Table(show_header=False, title=f"run {report['run_id']} {report['status']}")
    for key in ("pipeline", "pipeline_version", "total", "succeeded", "failed", "reused",
                "attempts", "rate_limited", "input_tokens", "cached_tokens", "output_tokens"):
        table.add_row(key, str(report[key]))
    table.add_row("cost_usd", f"{report['cost_usd']:.6f}")
    for error, count in report["errors"].items():
        table.add_row(f"error {error}", str(count))
    if report.get("status_reason"):
        table.add_row("paused because", report["status_reason"])
    console.print(table)
    if simulated:
        console.print("[yellow]simulated: no model was called; costs are what the same "
                      "tokens would cost[/yellow]")


# -- status, results, replay, resume ----------------------------------------------------------


@app.command("status")
def status_cmd(
    run_id: Annotated[int | None, typer.Argument(help="Run id; all recent runs if omitted.")]
    = None,
    watch: Annotated[bool, typer.Option(
        "--watch", "-w", help="A live view of the run until it finishes or pauses: progress, "
        "throughput, ETA, spend so far and projected, errors, 429 rate.")] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between updates.")] = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Progress, errors, tokens and cost of a run (or of recent runs)."""
    settings = _settings()
    _migrated(settings)
    from workers.db import repository as repo
    from workers.db.session import session_scope

    if watch:
        if run_id is None or as_json:
            err.print("[red]docpipe:[/red] --watch needs a run id, and no --json")
            raise typer.Exit(2)
        from workers.ops import monitor

        try:
            monitor.watch(run_id, console=console, interval=interval)
        except LookupError:
            err.print(f"[red]docpipe:[/red] no run {run_id}")
            raise typer.Exit(1) from None
        return

    with session_scope() as session:
        ids = [run_id] if run_id is not None else [r.id for r in repo.list_runs(session)]
        found = [repo.run_report(session, i) for i in ids]
        reports = [report.as_dict() for report in found if report is not None]
    if run_id is not None and not reports:
        err.print(f"[red]docpipe:[/red] no run {run_id}")
        raise typer.Exit(1)
    if as_json:
        console.print_json(data=reports[0] if run_id is not None else reports)
        return
    table = Table("run", "pipeline", "status", "total", "succeeded", "failed", "pending",
                  "attempts", "429s", "tokens in/cached/out", "cost $")
    for r in reports:
        table.add_row(str(r["run_id"]), r["pipeline"], r["status"], str(r["total"]),
                      str(r["succeeded"]), str(r["failed"]), str(r["pending"]),
                      str(r["attempts"]), str(r["rate_limited"]),
                      f"{r['input_tokens']}/{r['cached_tokens']}/{r['output_tokens']}",
                      f"{r['cost_usd']:.4f}")
    console.print(table)
    for r in reports:
        if r.get("status_reason"):
            console.print(f"run {r['run_id']}: {r['status_reason']}")
    if run_id is not None:
        r = reports[0]
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r["attempts_by_outcome"].items()))
        console.print(f"attempts by class: {outcomes or 'none'}")
        console.print(f"waited for rate limits: {r['budget_wait_seconds']:.1f}s   last "
                      f"minute: {r['requests_last_minute']} requests, "
                      f"{r['tokens_last_minute']} tokens")
        from workers.runs.pricing import usd

        def money(key: str) -> str:
            return usd(Decimal(str(r[key])))

        console.print(f"prompt cache: {r['cache_hit_ratio']:.1%} of input tokens cached")
        spend = f"spent {money('cost_usd')}, projected {money('projected_cost_usd')}"
        if r["budget_usd"] is not None:
            spend += (f", budget {money('budget_usd')} ({money('in_flight_usd')} held for "
                      "calls in flight)")
        if per := r["cost_per_item"]:
            spend += "; per item " + ", ".join(
                f"{k} {usd(Decimal(str(per[k])))}" for k in ("p50", "p90", "max"))
        console.print(spend)
        for error, count in sorted(r["errors"].items()):
            console.print(f"failed {error}: {count}")


@app.command("report")
def report_cmd(
    run_id: Annotated[int, typer.Argument(help="Run id.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] =
    Path("report.html"),
) -> None:
    """Write one self-contained HTML page about a run: plots, slowest and costliest
    documents, errors by class, and the run's configuration."""
    settings = _settings()
    _migrated(settings)
    from workers.ops import report

    try:
        data = report.gather(run_id)
    except LookupError:
        err.print(f"[red]docpipe:[/red] no run {run_id}")
        raise typer.Exit(1) from None
    output.write_text(report.render(data, settings), encoding="utf-8")
    console.print(f"run {run_id}: {len(data.started)} calls, {data.report.total} items; "
                  f"report written to {output}")


@app.command("limits")
def limits_cmd(as_json: JsonOpt = False) -> None:
    """The fleet's rate-limit budgets, levels, cooldowns and circuit breakers."""
    settings = _settings()
    import redis
    from kombu.utils.url import maybe_sanitize_url

    from workers.admission.throttle import get_throttle

    try:
        snapshot = get_throttle(settings).snapshot()
    except redis.RedisError as exc:
        raise ConfigurationError(
            "cannot read the limiter from the broker at "
            f"{maybe_sanitize_url(settings.effective_broker_url)}: {exc}"
        ) from exc
    if as_json:
        console.print_json(data=snapshot.as_dict())
        return
    table = Table("key", "rpm", "tpm", "source", "requests left", "tokens left", "cooldown s")
    for row in snapshot.limits:
        table.add_row(row.key, str(row.rpm or "-"), str(row.tpm or "-"), row.source,
                      str(row.requests_available), str(row.tokens_available),
                      str(row.cooldown_seconds))
    console.print(table)
    console.print(f"breaker for {snapshot.endpoint}: {snapshot.breaker}")


@app.command("results")
def results_cmd(
    run_id: Annotated[int | None, typer.Argument(help="Run id.")] = None,
    pipeline: Annotated[str | None, typer.Option(
        "--pipeline", "-p", help="Instead of a run: each document's latest result from this "
        "pipeline.")] = None,
    version: Annotated[str | None, typer.Option(
        help="With --pipeline: the results of this version instead of the latest.")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl or csv.")] = "jsonl",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write.")] = None,
) -> None:
    """Export a run's documents (output or error), or a pipeline's results by version."""
    if fmt not in ("jsonl", "csv"):
        err.print("[red]docpipe:[/red] --format must be jsonl or csv")
        raise typer.Exit(2)
    if (run_id is None) == (pipeline is None):
        err.print("[red]docpipe:[/red] give a run id, or --pipeline NAME [--version V]")
        raise typer.Exit(2)
    settings = _settings()
    _migrated(settings)
    from workers.db import repository as repo
    from workers.db.session import session_scope

    stream = open(output, "w", newline="", encoding="utf-8") if output else sys.stdout
    try:
        writer = csv.writer(stream) if fmt == "csv" else None
        with session_scope() as session:
            if pipeline is not None:
                _write_pipeline_results(
                    stream, writer, repo.iter_pipeline_results(session, pipeline,
                                                               version=version))
                return
            assert run_id is not None
            if writer:
                writer.writerow(["item_id", "source", "content_hash", "status", "reused",
                                 "error_class", "error_code", "error_message", "output"])
            for row in repo.iter_item_results(session, run_id):
                if writer:
                    writer.writerow([row.item_id, row.source, row.content_hash, row.status,
                                     row.reused, row.error_class, row.error_code,
                                     row.error_message,
                                     json.dumps(row.output, ensure_ascii=False)
                                     if row.output is not None else ""])
                    continue
                record: dict[str, Any] = {"item_id": row.item_id, "source": row.source,
                                          "content_hash": row.content_hash,
                                          "status": row.status, "reused": row.reused}
                if row.output is not None:
                    record["output"] = row.output
                else:
                    record["error"] = {"class": row.error_class, "code": row.error_code,
                                       "message": row.error_message}
                stream.write(json.dumps(record, ensure_ascii=False) + "\n")
    finally:
        if output:
            stream.close()


def _write_pipeline_results(stream: Any, writer: Any, rows: Iterator[Any]) -> None:
    if writer:
        writer.writerow(["document_id", "source", "content_hash", "pipeline_version",
                         "created_at", "output"])
    for row in rows:
        if writer:
            writer.writerow([row.document_id, row.source, row.content_hash,
                             row.pipeline_version, row.created_at.isoformat(),
                             json.dumps(row.output, ensure_ascii=False)])
            continue
        stream.write(json.dumps({
            "document_id": row.document_id, "source": row.source,
            "content_hash": row.content_hash, "pipeline_version": row.pipeline_version,
            "created_at": row.created_at.isoformat(), "output": row.output,
        }, ensure_ascii=False) + "\n")


@app.command("replay")
def replay_cmd(
    run_id: Annotated[int, typer.Argument(help="Run id.")],
    status: Annotated[list[str], typer.Option(help="Item statuses to replay.")] = ["failed"],  # noqa: B006
    as_json: JsonOpt = False,
) -> None:
    """Put a run's failed items back in the queue; succeeded items are never called again."""
    settings = _settings()
    _migrated(settings)
    from workers.db import repository as repo
    from workers.db.session import session_scope
    from workers.runtime.tasks import send_items

    with session_scope() as session:
        run = repo.get_run(session, run_id)
        if run is None:
            err.print(f"[red]docpipe:[/red] no run {run_id}")
            raise typer.Exit(1)
        queue = run.queue
        ids = repo.replay_items(session, run_id, status)
    send_items(ids, queue=queue)
    with session_scope() as session:
        repo.touch_queued(session, ids)
    if as_json:
        console.print_json(data={"run_id": run_id, "replayed": len(ids)})
    else:
        console.print(f"run {run_id}: {len(ids)} items replayed")


@app.command("resume")
def resume_cmd(
    run_id: Annotated[int, typer.Argument(help="Run id.")],
    budget_usd: Annotated[float | None, typer.Option(
        "--budget-usd", min=0, help="A new budget for the run, in dollars.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Continue a paused run, and re-enqueue items that have no message in flight."""
    settings = _settings()
    _migrated(settings)
    from workers.db import repository as repo
    from workers.db.session import session_scope
    from workers.runs import reconcile
    from workers.runtime.tasks import send_items

    with session_scope() as session:
        repo.resume_run(session, run_id, budget_usd=_money(budget_usd))
    count = reconcile.requeue(run_id, settings=settings, publish=send_items,
                              queued_grace_seconds=0, immediate=True)
    if as_json:
        console.print_json(data={"run_id": run_id, "requeued": count})
    else:
        console.print(f"run {run_id}: {count} items re-enqueued")


# -- simulator --------------------------------------------------------------------------------


@app.command("simulator")
def simulator_cmd(
    port: Annotated[int, typer.Option(help="TCP port.")] = 8700,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    rpm: Annotated[int | None, typer.Option(help="Requests per minute limit.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute limit.")] = None,
    latency_ms: Annotated[str, typer.Option(
        help="Median latency in ms, or MEDIAN,P99 for a heavy (log-normal) tail.")] = "50",
    seed: Annotated[int, typer.Option(help="Random seed for latency and faults.")] = 0,
    fail_rate: Annotated[float, typer.Option(
        "--fail-rate", "--error-rate", help="Share of 5xx answers.")] = 0.0,
    rate_limit_rate: Annotated[float, typer.Option(help="Share of injected 429s.")] = 0.0,
    timeout_rate: Annotated[float, typer.Option(help="Share of requests that hang.")] = 0.0,
    reset_rate: Annotated[float, typer.Option(
        "--reset-rate", "--reset", help="Share of connection resets.")] = 0.0,
    refuse_rate: Annotated[float, typer.Option(
        "--refuse-rate", "--refusal-rate", help="Share of refusals.")] = 0.0,
    truncate_rate: Annotated[float, typer.Option(help="Share of truncated outputs.")] = 0.0,
    quota_exhausted: Annotated[bool, typer.Option(help="Answer insufficient_quota.")] = False,
    quota_after: Annotated[int | None, typer.Option(
        help="Answer insufficient_quota after N admitted calls.")] = None,
) -> None:
    """Serve docpipe's Responses API simulator (a test tool, not a model)."""
    from workers.simulator import SimulatorConfig, run
    from workers.simulator.server import parse_latency

    median, sigma = parse_latency(latency_ms)
    config = SimulatorConfig(
        rpm=rpm, tpm=tpm, latency_ms=median, latency_sigma=sigma, seed=seed,
        error_rate=fail_rate, rate_limit_rate=rate_limit_rate, timeout_rate=timeout_rate,
        reset_rate=reset_rate, refusal_rate=refuse_rate, truncate_rate=truncate_rate,
        quota_exhausted=quota_exhausted, quota_after=quota_after,
    )
    err.print(f"docpipe simulator (not a real model) on http://{host}:{port}/v1")
    run(config, host=host, port=port)
