"""What an operator does to a run: cancel it, replay its failures, resume it, follow it.

The CLI parses and prints; these functions do the work, so every front end (the CLI, a test,
a script) cancels, replays and resumes a run the same way.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from pipelines import Pipeline, get_pipeline
from workers.db import repository as repo
from workers.db.models import RunStatus
from workers.db.session import session_scope
from workers.errors import PIPELINE_PAUSES, ConfigurationError, RunNotFound
from workers.items.decide import pause_reason_class
from workers.llm.pricing import price_table
from workers.runs import reconcile
from workers.runs.ingest import IngestReport, finish_ingest
from workers.settings import Settings

Publisher = Callable[..., None]


@dataclass(frozen=True)
class Cancelled:
    """A cancelled run: its status after the cancel, and the provider batches cancelled."""

    run_id: int
    status: str
    batches_cancelled: tuple[str, ...]


def cancel(run_id: int, *, settings: Settings) -> Cancelled:
    """Stop a run: items not yet sent fail as cancelled, its open batches are cancelled.

    Calls in flight finish and are kept (they are paid for); so are the lines a cancelled
    batch completed before it stopped.
    """
    with session_scope() as session:
        if repo.get_run(session, run_id) is None:
            raise RunNotFound(run_id)
        open_batches = repo.cancel_run(session, run_id)
    if open_batches:
        from workers.llm.client import files_and_batches

        sdk = files_and_batches(settings)
        for provider_id in open_batches:
            sdk.batches.cancel(provider_id)
    with session_scope() as session:
        report = repo.run_report(session, run_id)
    assert report is not None
    return Cancelled(run_id, report.status, tuple(open_batches))


@dataclass(frozen=True)
class Replayed:
    """What ``docpipe replay`` did: items sent again, and those it left, by error code."""

    run_id: int
    replayed: int
    #: Items of sources that were never read into a document (unreadable, empty, not
    #: found...): no request to send again, so replay cannot fix them.
    skipped: dict[str, int]


def replay(run_id: int, statuses: Sequence[str], *, publish: Publisher) -> Replayed:
    """Put a run's items in ``statuses`` back in its queue.

    Succeeded items are never called again: their results stay. Items whose source was
    never read are skipped, and counted by their error code.
    """
    with session_scope() as session:
        run = repo.get_run(session, run_id)
        if run is None:
            raise RunNotFound(run_id)
        queue = run.queue
        skipped = repo.replay_skipped(session, run_id, statuses)
        ids = repo.replay_items(session, run_id, statuses)
    publish(ids, queue=queue)
    with session_scope() as session:
        repo.touch_queued(session, ids)
    return Replayed(run_id, len(ids), skipped)


@dataclass(frozen=True)
class Resumed:
    """What ``docpipe resume`` did."""

    run_id: int
    #: Items sent again: written, but with no message in the queue.
    requeued: int
    #: The rest of an ingest that was cut off, read now; None when it had ended.
    ingested: IngestReport | None = None
    #: A reprocess run cut off before all its documents had items: started with those it
    #: has (a new ``docpipe reprocess`` selects the rest).
    cut_short: bool = False
    #: The run paused for its pipeline's own request, and the pipeline was fixed since:
    #: (the version it ran, the version it runs now) for the items not done yet.
    repinned: tuple[str, str] | None = None


def resume(run_id: int, *, settings: Settings, publish: Publisher,
           budget_usd: Decimal | None = None) -> Resumed:
    """Continue a paused run (with a new budget if given), finish its ingest if that was
    cut off, and re-send what has no message.

    A run paused for its pipeline's own request (a parameter or schema the API refused, a
    model it does not have, a file that did not load) takes the pipeline as fixed since:
    its items not done yet are sent with the new version's request.

    Raises:
        RunNotFound: no run has this id.
        ConfigurationError: the ingest must be finished, but its pipeline has changed or its
            paths' folder is gone; or a new budget on a model docpipe has no price for.
    """
    with session_scope() as session:
        run = repo.get_run(session, run_id)
        if run is None:
            raise RunNotFound(run_id)
        ingested_at, sources = run.ingested_at, run.sources
        name, version, queue, mode = run.pipeline, run.pipeline_version, run.queue, run.mode
        model = run.model
        paused_for = pause_reason_class(run.status_reason) \
            if run.status == RunStatus.PAUSED else None
    fixed = _fixed_pipeline(name, version, paused_for, settings)
    if budget_usd is not None:
        price_table(settings).require(fixed.model if fixed else model)
    with session_scope() as session:
        if fixed is not None:
            repo.repin_run(session, run_id, version=fixed.version, model=fixed.model)
        repo.resume_run(session, run_id, budget_usd=budget_usd)
    repinned = (version, fixed.version) if fixed is not None else None
    version = fixed.version if fixed is not None else version
    ingested, cut_short = None, False
    if ingested_at is None and sources is not None:
        ingested = _finish_ingest(run_id, sources, name, version, settings=settings,
                                  publish=publish, queue=queue, mode=mode)
    elif ingested_at is None:
        cut_short = True
        with session_scope() as session:
            repo.start_run(session, run_id)
        with session_scope() as session:
            repo.finish_run_if_done(session, run_id)
    requeued = reconcile.requeue(run_id, settings=settings, publish=publish,
                                 queued_grace_seconds=0, immediate=True)
    return Resumed(run_id, requeued, ingested, cut_short, repinned)


def _fixed_pipeline(name: str, version: str, paused_for: str | None, settings: Settings
                    ) -> Pipeline | None:
    """The run's pipeline as fixed since the run paused for its own request, model or file;
    None when the pause had another cause or the pipeline is unchanged."""
    if paused_for not in PIPELINE_PAUSES:
        return None
    pipeline = get_pipeline(name, settings.pipelines)
    return pipeline if pipeline.version != version else None


def _finish_ingest(run_id: int, sources: dict[str, Any], name: str, version: str, *,
                   settings: Settings, publish: Publisher, queue: str, mode: str
                   ) -> IngestReport:
    pipeline = get_pipeline(name, settings.pipelines)
    if pipeline.version != version:
        raise ConfigurationError(
            f"run {run_id} was started with pipeline {name} {version}, which is now "
            f"{pipeline.version}: restore its definition to finish the run's ingest, or "
            "start a new run")
    folder = Path(str(sources.get("cwd", ".")))
    if not folder.is_dir():
        raise ConfigurationError(f"run {run_id}'s paths were given in {folder}, which is "
                                 "gone: its ingest cannot be finished; start a new run")
    with contextlib.chdir(folder):  # the paths as they were given, so sources match
        return finish_ingest(run_id, [str(p) for p in sources.get("paths", [])], pipeline,
                             settings=settings, publish=publish, queue=queue, mode=mode)


class _Process(Protocol):
    def poll(self) -> int | None: ...


class Supervisor:
    """Keeps a foreground run going while its own workers run it (``docpipe run``).

    There is no beat in that mode, so every ``sweep_seconds`` it reconciles the run; when
    every worker has exited it stops with the command that continues the run.
    """

    def __init__(self, run_id: int, *, settings: Settings, publish: Publisher,
                 processes: Sequence[_Process], sweep_seconds: float = 15.0) -> None:
        self.run_id = run_id
        self._settings = settings
        self._publish = publish
        self._processes = processes
        self._sweep_seconds = sweep_seconds
        self._last_sweep = time.monotonic()

    def __call__(self, _report: Any = None) -> None:
        """One tick: check the workers, then reconcile if a sweep is due."""
        if not any(p.poll() is None for p in self._processes):
            raise ConfigurationError(
                "every worker exited; see .docpipe/worker.log. The run is kept: "
                f"`docpipe resume {self.run_id}` continues it"
            )
        if time.monotonic() - self._last_sweep > self._sweep_seconds:
            reconcile.requeue(self.run_id, settings=self._settings, publish=self._publish)
            self._last_sweep = time.monotonic()
