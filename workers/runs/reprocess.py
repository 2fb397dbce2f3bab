"""Reprocessing: a run of exactly the stored documents a pipeline's current version lacks.

Every result records the pipeline version that made it, so after a prompt, schema or model
change the documents fall into plain classes:

- ``missing``: the pipeline never processed the document;
- ``outdated``: an older version did, the current one has not;
- ``failed``: the pipeline failed on it and never succeeded.

A document whose current-version result exists is skipped, and so is one with an item still
open in an unfinished run (sending it again could pay twice). Results of older versions are
kept: ``docpipe results --pipeline NAME --version V`` still shows them.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pipelines import Pipeline
from workers.db import repository as repo
from workers.db.session import session_scope
from workers.errors import ScheduleBusy
from workers.llm.pricing import SHIPPED_PRICES, PriceTable
from workers.runs.ingest import BATCH_SIZE, Publisher, add_run_items

Reason = Literal["missing", "outdated", "failed"]
REASONS: tuple[Reason, ...] = ("missing", "outdated", "failed")


@dataclass
class ReprocessReport:
    """What ``docpipe reprocess`` did: the run, what it took and what it skipped, and why."""

    pipeline: str
    pipeline_version: str
    run_id: int | None = None
    items: int = 0
    long_documents: int = 0
    selected: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: what ``docpipe reprocess --json`` prints."""
        return {"pipeline": self.pipeline, "pipeline_version": self.pipeline_version,
                "run_id": self.run_id, "items": self.items,
                "long_documents": self.long_documents,
                "selected": dict(self.selected), "skipped": dict(self.skipped)}


def classify(state: repo.DocumentState) -> str:
    """Why a document needs the current version (a :data:`Reason`), or why it does not."""
    if state.current:
        return "current"
    if state.busy:
        return "in_progress"
    if state.succeeded:
        return "outdated"
    if state.failed:
        return "failed"
    return "missing"


def reprocess(pipeline: Pipeline, *, publish: Publisher, queue: str,
              only: Collection[Reason] = REASONS, since: datetime | None = None,
              where: str | None = None, budget_usd: Decimal | None = None,
              schedule: str | None = None, mode: str = "live",
              deadline_at: datetime | None = None,
              prices: PriceTable = SHIPPED_PRICES) -> ReprocessReport:
    """Create and enqueue a run of ``pipeline`` over the stored documents that need it.

    ``since`` keeps documents first stored at or after it; ``where`` keeps sources that match
    the glob. No run is created when nothing needs processing. A run started by
    ``schedule`` is that schedule's only unfinished run.

    Raises:
        ScheduleBusy: the schedule's previous run has not finished.
        ConfigurationError: a budget on a model ``prices`` has no price for.
    """
    if budget_usd is not None:
        prices.require(pipeline.model)
    report = ReprocessReport(pipeline.name, pipeline.version)
    chosen: list[tuple[int, str]] = []
    with session_scope() as session:
        if schedule is not None and (busy := repo.unfinished_scheduled_run(session, schedule)):
            raise ScheduleBusy(f"schedule {schedule!r}: run {busy} has not finished")
        for state in repo.document_states(session, pipeline=pipeline.name,
                                          version=pipeline.version, since=since):
            if where is not None and not fnmatch.fnmatchcase(state.source, where):
                report.skipped["not_matching_where"] += 1
                continue
            reason = classify(state)
            if reason in only:
                report.selected[reason] += 1
                chosen.append((state.document_id, state.source))
            elif reason in REASONS:
                report.skipped[f"{reason}_not_selected"] += 1
            else:
                report.skipped[reason] += 1
    if not chosen:
        if schedule is not None:
            with session_scope() as session:
                # A racing tick's run took the documents after the check above.
                if busy := repo.unfinished_scheduled_run(session, schedule):
                    raise ScheduleBusy(f"schedule {schedule!r}: run {busy} has not finished")
        return report

    with session_scope() as session:
        run = repo.create_run(session, pipeline=pipeline.name, version=pipeline.version,
                              model=pipeline.model, queue=queue, budget_usd=budget_usd,
                              schedule=schedule, mode=mode, deadline_at=deadline_at)
        report.run_id = run.id
    for start in range(0, len(chosen), BATCH_SIZE):
        batch = chosen[start : start + BATCH_SIZE]
        with session_scope() as session:
            # Only texts that may be too long for one call are read: the others need none.
            texts = {} if pipeline.max_input_tokens is None else repo.document_texts(
                session, [doc for doc, _ in batch], over_bytes=pipeline.max_input_tokens)
            created, added, long_documents = add_run_items(
                session, report.run_id,
                [(doc, source, texts.get(doc, "")) for doc, source in batch], pipeline)
        report.items += added
        report.long_documents += long_documents
        if created and mode != "batch":  # beat sends a batch run's items
            publish(created, queue=queue)
            with session_scope() as session:
                repo.mark_queued(session, created)
    with session_scope() as session:
        repo.start_run(session, report.run_id)
    with session_scope() as session:
        repo.finish_run_if_done(session, report.run_id)
    return report
