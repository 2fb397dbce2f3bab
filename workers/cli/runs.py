"""The run commands: ingest, reprocess, estimate, cancel, replay, resume."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from workers.cli.app import (
    BudgetOpt,
    DeadlineOpt,
    JsonOpt,
    ModeOpt,
    PathsArg,
    PipelineOpt,
    StrictOpt,
    app,
    checked_mode,
    checked_pipeline,
    console,
    deadline,
    err,
    fail,
    migrated,
    money,
    run_ended,
    settings,
    waiting_check,
)
from workers.errors import RunNotFound

RunIdArg = Annotated[int, typer.Argument(help="Run id.")]


@app.command("ingest", short_help="Record a new run's documents and enqueue them.")
def ingest_cmd(
    paths: PathsArg,
    pipeline: PipelineOpt = "summarise",
    queue: Annotated[str, typer.Option(help="Queue for the run's items.")] = "docpipe.live",
    budget_usd: BudgetOpt = None,
    mode: ModeOpt = "live",
    deadline_hours: DeadlineOpt = None,
    strict: StrictOpt = False,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Then show the run's progress until it finishes or pauses (exit 3 if "
        "paused). Workers must be running.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Record documents and items for a new run and enqueue them; print the run id."""
    current = migrated(settings())
    chosen = checked_pipeline(pipeline, current, strict=strict, budget_usd=budget_usd)
    from workers.runs.ingest import ingest
    from workers.runtime.publish import send_items

    report = ingest(paths, chosen, settings=current, publish=send_items, queue=queue,
                    budget_usd=money(budget_usd),
                    mode=checked_mode(mode, budget_usd=budget_usd),
                    deadline_at=deadline(deadline_hours, mode))
    if as_json:
        console.print_json(data=report.as_dict())
    else:
        console.print(f"run {report.run_id}: {report.items} items queued, {report.duplicates} "
                      f"duplicates (not sent again: they share the first path's result), "
                      f"{report.unreadable} unreadable")
    if wait:
        from workers.ops import monitor

        final = monitor.watch(report.run_id, console=err if as_json else console,
                              waiting=waiting_check(report.run_id, current))
        raise run_ended(report.run_id, status=final.status,
                        documents_failed=final.documents_failed, to=err if as_json else None)


@app.command("reprocess", short_help="Run a pipeline's current version on stored documents.")
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
    strict: StrictOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run a pipeline over the stored documents its current version has no result for."""
    from workers.runs.reprocess import REASONS, reprocess
    from workers.runtime.publish import send_items

    chosen_reasons = tuple(only or REASONS)
    if unknown := sorted(set(chosen_reasons) - set(REASONS)):
        raise fail(f"--only takes {', '.join(REASONS)}; not {unknown}")
    from workers.llm.pricing import price_table

    current = migrated(settings())
    chosen = checked_pipeline(pipeline, current, strict=strict, budget_usd=budget_usd)
    report = reprocess(chosen, publish=send_items, queue=queue, prices=price_table(current),
                       only=chosen_reasons,  # type: ignore[arg-type]
                       since=since.replace(tzinfo=UTC) if since and since.tzinfo is None
                       else since, where=where, budget_usd=money(budget_usd),
                       mode=checked_mode(mode, budget_usd=budget_usd),
                       deadline_at=deadline(deadline_hours, mode))
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


@app.command("estimate", short_help="Predict a run's calls, tokens and dollars.")
def estimate_cmd(paths: PathsArg, pipeline: PipelineOpt = "summarise",
                 strict: StrictOpt = False, as_json: JsonOpt = False) -> None:
    """Predict the tokens and dollars of a run before anything is sent."""
    current = settings()
    chosen = checked_pipeline(pipeline, current, strict=strict)
    from sqlalchemy.exc import OperationalError

    from workers.errors import ConfigurationError
    from workers.llm.pricing import price_table, usd
    from workers.ops import tables
    from workers.runs.estimate import estimate
    from workers.settings import DEFAULT_DATABASE_FILE

    try:
        if current.uses_default_database and not DEFAULT_DATABASE_FILE.exists():
            raise ConfigurationError("no embedded database yet")  # do not create one
        migrated(current)
        use_database = True
    except (ConfigurationError, OperationalError):
        use_database = False  # no history and no reuse to count: estimate the rest
        err.print("[dim]no docpipe database here: not counting results to reuse[/dim]")
    result = estimate(paths, chosen, settings=current, prices=price_table(current),
                      use_database=use_database)
    if as_json:
        console.print_json(data=result.as_dict())
        return
    console.print(f"{_count(result.documents, 'document')} ({result.duplicates} duplicates, "
                  f"{result.already_done} already done for version {result.pipeline_version}),"
                  f" {result.unreadable} unreadable{':' if result.unreadable else ''}")
    for line in tables.unreadable(result.unreadable_files):
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    long = f" ({result.long_documents} long, in chunks and reduces)" \
        if result.long_documents else ""
    console.print(f"to send: {_count(result.to_call, 'document')} in "
                  f"{_count(result.calls, 'call')} to {result.model}{long}")
    reduces = (f" + at most {result.reduce_input_tokens:,} for reduces"
               if result.reduce_input_tokens else "")
    console.print(f"input: {result.input_tokens:,} tokens (o200k_base, counted){reduces}   "
                  f"output: at most {result.max_output_tokens:,} tokens (max_output_tokens "
                  "a call)")
    if not result.priced:
        console.print(f"[yellow]no price for {result.model}: set DOCPIPE_PRICES[/yellow]")
        return
    if result.expected_usd is not None and result.typical_output_tokens is not None:
        console.print(f"expected: {usd(result.expected_usd)} (output like the "
                      f"{result.calls_seen} calls made so far: "
                      f"{result.typical_output_tokens:.0f} tokens each)")
    console.print(f"at most: {usd(result.ceiling_usd)}, or {usd(result.ceiling_batch_usd)} "
                  "through the Batch API")


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


@app.command("cancel", short_help="Stop a run: items not yet sent fail as cancelled.")
def cancel_cmd(run_id: RunIdArg, as_json: JsonOpt = False) -> None:
    """Stop a run: items not yet sent fail as cancelled, its open batches are cancelled.

    Calls in flight finish and are kept (they are paid for); so are the lines a cancelled
    batch completed before it stopped.
    """
    from workers.runs import operations

    done = operations.cancel(run_id, settings=migrated(settings()))
    if as_json:
        console.print_json(data={"run_id": run_id, "status": done.status,
                                 "batches_cancelled": list(done.batches_cancelled)})
        return
    console.print(f"run {run_id} cancelled ({done.status}); batches cancelled: "
                  f"{len(done.batches_cancelled)}")


@app.command("replay", short_help="Put a run's failed items back in the queue.")
def replay_cmd(
    run_id: RunIdArg,
    status: Annotated[list[str], typer.Option(help="Item statuses to replay.")] = ["failed"],  # noqa: B006
    as_json: JsonOpt = False,
) -> None:
    """Put a run's failed items back in the queue; succeeded items are never called again."""
    migrated(settings())
    from workers.runs import operations
    from workers.runtime.publish import send_items

    done = operations.replay(run_id, status, publish=send_items)
    if as_json:
        console.print_json(data={"run_id": run_id, "replayed": done.replayed,
                                 "skipped": done.skipped})
        return
    console.print(f"run {run_id}: {done.replayed} items replayed")
    if done.skipped:
        codes = ", ".join(f"{n} {code}" for code, n in sorted(done.skipped.items()))
        count = sum(done.skipped.values())
        console.print(f"run {run_id}: {count} skipped ({codes}): their files could not be "
                      "read, so there is no request to send again; fix the files and ingest "
                      "them again (`docpipe results "
                      f"{run_id} --failed` lists them)", soft_wrap=True)


@app.command("resume", short_help="Continue a paused or cut-off run.")
def resume_cmd(
    run_id: RunIdArg,
    budget_usd: Annotated[float | None, typer.Option(
        "--budget-usd", min=0, help="A new budget for the run, in dollars.")] = None,
    simulate: Annotated[bool, typer.Option(
        "--simulate", help="With no broker configured (one-machine mode): answer with docpipe's "
        "simulator, as `docpipe run --simulate` did.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Continue a paused run, finish its ingest if that was cut off (its paths are read
    again), and re-enqueue items that have no message in flight. With no broker configured
    (one-machine mode) the run goes on here, as `docpipe run` ran it."""
    current = migrated(settings())
    if current.broker_url is None:
        from workers.cli.local import resume_here
        from workers.db import repository as repo
        from workers.db.session import session_scope

        with session_scope() as session:
            if repo.get_run(session, run_id) is None:
                raise RunNotFound(run_id)
        resume_here(run_id, simulate=simulate, workers=1, budget_usd=money(budget_usd))
    # Imported once the broker is known: the Celery app reads its URL when it is made.
    from workers.runs import operations
    from workers.runtime.publish import send_items

    resumed = operations.resume(run_id, settings=current, publish=send_items,
                                budget_usd=money(budget_usd))
    ingested = resumed.ingested
    if as_json:
        console.print_json(data={"run_id": run_id, "requeued": resumed.requeued,
                                 "ingested": ingested.as_dict() if ingested else None,
                                 "cut_short": resumed.cut_short,
                                 "repinned": resumed.repinned})
        return
    if resumed.repinned is not None:
        old, new = resumed.repinned
        console.print(f"run {run_id}: its pipeline was fixed ({old} is now {new}): the items "
                      "not done yet are sent with the new request")
    if ingested is not None:
        console.print(f"run {run_id}: its ingest is finished: {ingested.items} more items, "
                      f"{ingested.unreadable} more unreadable")
    if resumed.cut_short:
        console.print(f"run {run_id}: its reprocess was cut off; it runs the documents it "
                      "has, and `docpipe reprocess` selects the rest")
    console.print(f"run {run_id}: {resumed.requeued} items re-enqueued")
