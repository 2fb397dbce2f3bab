"""What a run did: status, report, limits and results."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from workers.cli.app import (
    JsonOpt,
    app,
    console,
    fail,
    migrated,
    run_ended,
    settings,
    show_failures,
    waiting_check,
)
from workers.errors import ConfigurationError, RunNotFound
from workers.ops import exports, tables


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
    current = migrated(settings())
    if watch:
        _watch(run_id, interval=interval, as_json=as_json)
        return
    reports = _reports(run_id)
    if run_id is not None and not reports:
        raise RunNotFound(run_id)
    if as_json:
        console.print_json(data=reports[0] if run_id is not None else reports)
        return
    console.print(tables.runs(reports, console))
    for line in tables.reasons(reports):
        console.print(line)
    if run_id is not None:
        for line in tables.run_details(reports[0]):
            console.print(line)
        show_failures(run_id, reports[0]["documents_failed"])
        from workers.db import repository as repo
        from workers.db.session import session_scope

        with session_scope() as session:
            report = repo.run_report(session, run_id)
        if report is not None and (why := waiting_check(run_id, current)(report)):
            console.print(f"[yellow]waiting: {why}[/yellow]")


def _watch(run_id: int | None, *, interval: float, as_json: bool) -> None:
    if run_id is None or as_json:
        raise fail("--watch needs a run id, and no --json")
    from workers.ops import monitor

    final = monitor.watch(run_id, console=console, interval=interval,
                          waiting=waiting_check(run_id, settings()))
    raise run_ended(run_id, status=final.status, documents_failed=final.documents_failed)


def _reports(run_id: int | None) -> list[dict[str, Any]]:
    from workers.db import repository as repo
    from workers.db.session import session_scope

    with session_scope() as session:
        ids = [run_id] if run_id is not None else [r.id for r in repo.list_runs(session)]
        found = [repo.run_report(session, i) for i in ids]
        return [report.as_dict() for report in found if report is not None]


@app.command("report", short_help="Write a run's report: one self-contained HTML page.")
def report_cmd(
    run_id: Annotated[int, typer.Argument(help="Run id.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] =
    Path("report.html"),
) -> None:
    """Write one self-contained HTML page about a run: plots, slowest and costliest
    documents, errors by class, and the run's configuration."""
    current = migrated(settings())
    from workers.ops import report

    data = report.gather(run_id)
    output.write_text(report.render(data, current), encoding="utf-8")
    console.print(f"run {run_id}: {len(data.started)} calls, {data.report.total} items; "
                  f"report written to {output}")


@app.command("limits", short_help="Rate-limit budgets, cooldowns and circuit breakers.")
def limits_cmd(as_json: JsonOpt = False) -> None:
    """The fleet's rate-limit budgets, levels, cooldowns and circuit breakers."""
    current = settings()
    import redis
    from kombu.utils.url import maybe_sanitize_url

    from workers.admission.throttle import get_throttle

    try:
        snapshot = get_throttle(current).snapshot()
    except redis.RedisError as exc:
        raise ConfigurationError(
            "cannot read the limiter from the broker at "
            f"{maybe_sanitize_url(current.effective_broker_url)}: {exc}"
        ) from exc
    if as_json:
        console.print_json(data=snapshot.as_dict())
        return
    console.print(tables.limits(snapshot))
    console.print(f"breaker for {snapshot.endpoint}: {snapshot.breaker}")


@app.command("results", short_help="Export a run's documents: jsonl, csv or parquet.")
def results_cmd(
    run_id: Annotated[int | None, typer.Argument(help="Run id.")] = None,
    pipeline: Annotated[str | None, typer.Option(
        "--pipeline", "-p", help="Instead of a run: each document's latest result from this "
        "pipeline.")] = None,
    version: Annotated[str | None, typer.Option(
        help="With --pipeline: the results of this version instead of the latest.")] = None,
    fmt: Annotated[str | None, typer.Option(
        "--format", "-f", help="jsonl, csv or parquet. Default: what the -o file's extension "
        "says (.jsonl, .csv, .parquet), or jsonl to stdout.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write.")] = None,
    failed: Annotated[bool, typer.Option(
        "--failed", help="With a run id: only its failed documents.")] = False,
) -> None:
    """Export a run's documents, one row each (its duplicates too): status, output or
    error, tokens, cost, calls and latency. Or a pipeline's results by version."""
    chosen = exports.format_for(fmt, output)
    if (run_id is None) == (pipeline is None):
        raise fail("give a run id, or --pipeline NAME [--version V]")
    if failed and run_id is None:
        raise fail("--failed takes a run id, not --pipeline")
    migrated(settings())
    from workers.db import repository as repo
    from workers.db.session import session_scope

    if run_id is not None:
        with session_scope() as session:
            if repo.get_run(session, run_id) is None:
                raise RunNotFound(run_id)
    with _destination(output, binary=chosen == "parquet") as stream, \
            session_scope() as session:
        if pipeline is not None:
            exports.write_pipeline(stream, chosen, repo.iter_pipeline_results(
                session, pipeline, version=version))
        else:
            assert run_id is not None
            exports.write_run(stream, chosen, repo.iter_document_results(
                session, run_id, failed_only=failed))


@contextmanager
def _destination(output: Path | None, *, binary: bool) -> Iterator[IO[Any]]:
    """stdout, or ``output`` written whole or not at all (a partial file is removed)."""
    if output is None:
        yield sys.stdout
        return
    partial = output.with_name(output.name + ".partial")
    try:
        with (open(partial, "wb") if binary
              else open(partial, "w", newline="", encoding="utf-8")) as stream:
            yield stream
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)
