"""``docpipe run`` and ``docpipe demo``: a whole run on this machine, in the foreground."""

from __future__ import annotations

import os
import shlex
import signal
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines import get_pipeline
from workers.cli.app import (
    BudgetOpt,
    ModeOpt,
    PathsArg,
    PipelineOpt,
    StrictOpt,
    app,
    checked_mode,
    checked_pipeline,
    console,
    fail,
    migrated,
    money,
    run_ended,
    settings,
)
from workers.errors import RunInterrupted
from workers.ops import tables
from workers.settings import get_settings

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples" / "documents"
SIMULATOR_KEY = "sk-docpipe-simulator"


@app.command("run")
def run_cmd(
    paths: PathsArg,
    pipeline: PipelineOpt = "summarise",
    simulate: Annotated[bool, typer.Option(
        "--simulate", help="Answer with docpipe's simulator.")] = False,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes to start.")] = 1,
    budget_usd: BudgetOpt = None,
    mode: ModeOpt = "live",
    strict: StrictOpt = False,
) -> None:
    """Ingest, process and report in one go, on this machine."""
    # A batch takes up to 24 hours: start it with `ingest --mode batch` and let beat collect.
    from workers.runs.ingest import check_inputs

    check_inputs(paths)  # before any service starts
    checked_pipeline(pipeline, settings(), strict=strict, budget_usd=budget_usd)
    report = _run_foreground(paths, pipeline, simulate=simulate, workers=workers,
                             budget_usd=money(budget_usd),
                             mode=checked_mode(mode, allowed=("live", "flex")))
    raise _ended(report)


@app.command("demo", short_help="Run the example documents through the simulator.")
def demo_cmd(
    pipeline: PipelineOpt = "summarise",
    path: Annotated[Path, typer.Option(help="Documents to run.")] = EXAMPLES,
) -> None:
    """Run the example documents through the simulator and show the results."""
    if not path.exists():
        raise fail(f"no example documents at {path}; pass --path")
    report = _run_foreground([str(path)], pipeline, simulate=True, workers=1)
    from workers.db import repository as repo
    from workers.db.session import session_scope

    with session_scope() as session:
        console.print(tables.documents(repo.iter_item_results(session, report["run_id"]),
                                       title=f"run {report['run_id']}: {pipeline}"))
    raise _ended(report)


def _ended(report: dict[str, Any]) -> typer.Exit:
    return run_ended(report["run_id"], status=report["status"],
                     documents_failed=report["documents_failed"])


def _run_foreground(paths: list[str], pipeline_name: str, *, simulate: bool, workers: int,
                    budget_usd: Decimal | None = None, mode: str = "live",
                    resume_id: int | None = None) -> dict[str, Any]:
    """Run a run here, with the services it needs: a new one over ``paths``, the one Ctrl-C
    stopped over the same paths, or run ``resume_id``. Ctrl-C pauses it and raises
    :class:`~workers.errors.RunInterrupted`, which says how to go on."""
    current = settings()
    chosen = get_pipeline(pipeline_name, current.pipelines) if resume_id is None else None
    if current.openai_api_key is None and not simulate:
        raise fail("OPENAI_API_KEY is not set. Set it to call the OpenAI API, or pass "
                   "--simulate to use docpipe's simulator (no real model).")
    migrated(current, auto=True)
    from workers.db import repository as repo
    from workers.db.session import session_scope
    from workers.errors import IngestCutOff

    run_id = resume_id
    if chosen is not None:
        with session_scope() as session:
            run_id = repo.interrupted_run(session, version=chosen.version,
                                          sources={"paths": list(paths), "cwd": os.getcwd()})
        if run_id is not None:
            console.print(f"run {run_id} was stopped before it ended: continuing it (what it "
                          "has done is not paid again)")
    try:
        with ExitStack() as stack:
            stack.enter_context(_stopped_as_by_ctrl_c())
            stack.enter_context(_environ(_services(stack, current, simulate=simulate)))
            get_settings.cache_clear()
            current = settings()
            processes = _start_workers(stack, workers)
            run_id = _start_here(paths, chosen, run_id, current, budget_usd=budget_usd,
                                 mode=mode)
            final = _watch_here(run_id, current, processes)
    except (KeyboardInterrupt, IngestCutOff) as exc:
        if isinstance(exc, IngestCutOff):
            if not exc.interrupted:
                raise
            run_id = exc.run_id
        if run_id is None:
            raise
        with session_scope() as session:
            repo.pause_run(session, run_id, repo.INTERRUPTED_REASON)
        raise _interrupted(run_id, simulate=simulate) from exc
    console.print(tables.summary(final))
    if simulate or final.get("simulated"):
        console.print(f"[yellow]{tables.SIMULATED}[/yellow]")
    return final


def _start_here(paths: list[str], chosen: Any, run_id: int | None, current: Any, *,
                budget_usd: Decimal | None, mode: str) -> int:
    """Ingest a new run, or continue run ``run_id``; its id."""
    from workers.runs import operations
    from workers.runs.ingest import ingest
    from workers.runtime.publish import send_items

    if run_id is None:
        report = ingest(paths, chosen, settings=current, publish=send_items,
                        queue="docpipe.live", budget_usd=budget_usd, mode=mode)
        console.print(f"run {report.run_id}: {report.items} items, {report.duplicates} "
                      f"duplicates, {report.unreadable} unreadable")
        return report.run_id
    resumed = operations.resume(run_id, settings=current, publish=send_items,
                                budget_usd=budget_usd)
    if resumed.ingested is not None:
        console.print(f"run {run_id}: its ingest is finished: {resumed.ingested.items} more "
                      "items")
    console.print(f"run {run_id}: {resumed.requeued} items sent again")
    return run_id


def _watch_here(run_id: int, current: Any, processes: list[Any]) -> dict[str, Any]:
    """The live view to the run's end, reconciling it as beat would."""
    from workers.ops import monitor
    from workers.runs import operations
    from workers.runtime.publish import send_items

    supervisor = operations.Supervisor(run_id, settings=current, publish=send_items,
                                       processes=processes)
    return monitor.watch(run_id, console=console, interval=0.3, on_tick=supervisor).as_dict()


def _interrupted(run_id: int, *, simulate: bool) -> RunInterrupted:
    again = shlex.join(["docpipe", *sys.argv[1:]])
    resume = f"docpipe resume {run_id}" + (" --simulate" if simulate else "")
    return RunInterrupted(run_id, f"interrupted: run {run_id} is paused. `{again}` continues "
                          f"it (what it has done is not paid again), as does `{resume}`")


def resume_here(run_id: int, *, simulate: bool, workers: int,
                budget_usd: Decimal | None) -> None:
    """``docpipe resume`` with no broker configured: the run goes on here, as ``docpipe
    run`` ran it, with an embedded Redis (and the simulator with ``simulate``)."""
    report = _run_foreground([], "", simulate=simulate, workers=workers,
                             budget_usd=budget_usd, resume_id=run_id)
    raise _ended(report)


def _services(stack: ExitStack, current: Any, *, simulate: bool) -> dict[str, str]:
    """Start what the settings do not name (a broker, the simulator); their environment."""
    from workers.runtime.embedded import child, docpipe_command, embedded_redis, free_port

    overrides: dict[str, str] = {}
    if current.broker_url is None:
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
    return overrides


def _start_workers(stack: ExitStack, count: int) -> list[Any]:
    from workers.runtime.embedded import child, docpipe_command

    log_dir = Path(".docpipe")
    log_dir.mkdir(exist_ok=True)
    return [stack.enter_context(child(
        docpipe_command("worker", "--hostname", f"docpipe{i}@%h"), what="worker",
        log_path=log_dir / "worker.log")) for i in range(count)]


@contextmanager
def _stopped_as_by_ctrl_c() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal) stop the run as Ctrl-C does: paused, and the
    services started for it stopped, instead of a parent gone and its children left."""
    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    saved = {signum: signal.signal(signum, interrupt)
             for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


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
