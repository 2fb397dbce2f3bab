"""What the CLI, the metrics and the report read about runs and their items."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Float,
    and_,
    case,
    cast,
    func,
    select,
)
from sqlalchemy.orm import Session

from workers.db.dialect import is_postgres
from workers.db.models import (
    Attempt,
    Document,
    Item,
    ItemStatus,
    Result,
    Run,
    RunDuplicate,
    RunMode,
    RunStatus,
    document_results,
    utcnow,
)


def open_item_counts(session: Session) -> dict[str, int]:
    """Items of unfinished runs by status: the fleet's work in hand (for metrics)."""
    rows = session.execute(
        select(Item.status, func.count()).join(Run, Run.id == Item.run_id)
        .where(Run.status != RunStatus.FINISHED).group_by(Item.status))
    return dict(rows.all())


def run_counts(session: Session) -> dict[str, int]:
    """Runs by status (for metrics)."""
    return dict(session.execute(select(Run.status, func.count()).group_by(Run.status)).all())


@dataclass(frozen=True)
class CallRow:
    """One attempt, as the run report plots it."""

    item_id: int
    source: str
    started_at: datetime
    latency_ms: int
    outcome: str
    http_status: int | None
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    cost_usd: Decimal


def iter_run_calls(session: Session, run_id: int) -> Iterator[CallRow]:
    """Every attempt of a run in start order, with its item's source, streamed."""
    rows = session.execute(
        select(Attempt.item_id, Item.source, Attempt.started_at, Attempt.latency_ms,
               Attempt.outcome, Attempt.http_status, Attempt.input_tokens,
               Attempt.cached_tokens, Attempt.output_tokens, Attempt.cost_usd)
        .join(Item, Item.id == Attempt.item_id)
        .where(Attempt.run_id == run_id).order_by(Attempt.started_at, Attempt.id)
        .execution_options(yield_per=5000))
    for row in rows:
        yield CallRow(**row._asdict())


def run_finish_times(session: Session, run_id: int) -> list[datetime]:
    """When each finished top-level item of a run finished, in order (for throughput)."""
    return list(session.scalars(
        select(Item.finished_at).where(Item.run_id == run_id, Item.parent_id.is_(None),
                                       Item.finished_at.is_not(None))
        .order_by(Item.finished_at)))


@dataclass(frozen=True)
class RunReport:
    """Progress, errors and spend of one run, from the database alone."""

    run_id: int
    pipeline: str
    pipeline_version: str
    model: str
    status: str
    status_reason: str | None
    created_at: datetime
    finished_at: datetime | None
    total: int
    by_status: dict[str, int]
    reused: int
    attempts: int
    rate_limited: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal
    errors: dict[str, int]
    attempts_by_outcome: dict[str, int] = field(default_factory=dict)
    budget_wait_seconds: float = 0.0
    #: Calls started, and tokens they used, in the last 60 seconds.
    last_minute_requests: int = 0
    last_minute_tokens: int = 0
    #: The run's budget, and the worst case of its calls in flight held against it.
    budget_usd: Decimal | None = None
    in_flight_usd: Decimal = Decimal(0)
    #: Spend so far plus the average cost of a called item for each item still open.
    projected_cost_usd: Decimal = Decimal(0)
    #: What the items that made calls cost each: p50, p90 and max.
    cost_per_item: dict[str, float] = field(default_factory=dict)
    #: ``live`` or ``flex`` (see RunMode), and the schedule that started the run.
    mode: str = RunMode.LIVE
    schedule: str | None = None
    #: Top-level items (one per document or unreadable source) by status: what a user
    #: counts, where ``by_status`` also counts a long document's chunks and reduces.
    documents_by_status: dict[str, int] = field(default_factory=dict)
    #: Paths whose content another path of the run brought first (no item of their own).
    duplicates: int = 0
    #: Calls docpipe's simulator answered, not a model.
    simulated_calls: int = 0

    @property
    def succeeded(self) -> int:
        return self.by_status.get(ItemStatus.SUCCEEDED, 0)

    @property
    def failed(self) -> int:
        return self.by_status.get(ItemStatus.FAILED, 0)

    @property
    def pending(self) -> int:
        return self.total - self.succeeded - self.failed

    @property
    def documents(self) -> int:
        return sum(self.documents_by_status.values())

    @property
    def documents_failed(self) -> int:
        return self.documents_by_status.get(ItemStatus.FAILED, 0)

    @property
    def documents_succeeded(self) -> int:
        return self.documents_by_status.get(ItemStatus.SUCCEEDED, 0)

    @property
    def documents_pending(self) -> int:
        """Documents not yet ended, either way."""
        return self.documents - self.documents_succeeded - self.documents_failed

    @property
    def cache_hit_ratio(self) -> float:
        """Share of input tokens served from the prompt cache."""
        return self.cached_tokens / self.input_tokens if self.input_tokens else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: what ``docpipe status --json`` prints."""
        return {
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "pipeline_version": self.pipeline_version,
            "model": self.model,
            "mode": self.mode,
            "schedule": self.schedule,
            "status": self.status,
            "status_reason": self.status_reason,
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "pending": self.pending,
            "by_status": self.by_status,
            "documents": self.documents,
            "documents_succeeded": self.documents_succeeded,
            "documents_failed": self.documents_failed,
            "documents_pending": self.documents_pending,
            "documents_by_status": self.documents_by_status,
            "duplicates": self.duplicates,
            "simulated": self.simulated_calls > 0,
            "simulated_calls": self.simulated_calls,
            "reused": self.reused,
            "attempts": self.attempts,
            "rate_limited": self.rate_limited,
            "input_tokens": self.input_tokens,
            "cached_tokens": self.cached_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cache_hit_ratio": round(self.cache_hit_ratio, 4),
            "cost_usd": float(self.cost_usd),
            "errors": self.errors,
            "attempts_by_outcome": self.attempts_by_outcome,
            "budget_wait_seconds": round(self.budget_wait_seconds, 3),
            "requests_last_minute": self.last_minute_requests,
            "tokens_last_minute": self.last_minute_tokens,
            "budget_usd": float(self.budget_usd) if self.budget_usd is not None else None,
            "in_flight_usd": float(self.in_flight_usd),
            "projected_cost_usd": float(self.projected_cost_usd),
            "cost_per_item": self.cost_per_item,
        }


def run_report(session: Session, run_id: int) -> RunReport | None:
    """Everything ``docpipe status`` shows for one run.

    Two passes over the run's items and one over its attempts, whatever the run's size: at
    100,000 items the earlier version's seven queries, and the per-item costs it summed from
    the attempts and sorted in Python, took 589 ms.
    """
    run = session.get(Run, run_id)
    if run is None:
        return None
    by_status: dict[str, int] = {}
    documents: dict[str, int] = {}
    reused = waited_ms = 0
    for status, count, top_level, reused_here, waited_here in session.execute(
        select(Item.status, func.count(), func.count().filter(Item.parent_id.is_(None)),
               func.count().filter(Item.reused.is_(True)),
               func.coalesce(func.sum(Item.budget_wait_ms), 0))
        .where(Item.run_id == run_id).group_by(Item.status)
    ):
        by_status[status] = count
        if top_level:
            documents[status] = int(top_level)
        reused += int(reused_here)
        waited_ms += int(waited_here)
    recent = Attempt.started_at >= utcnow() - timedelta(minutes=1)
    by_outcome: dict[str, int] = {}
    # input, cached, output and reasoning tokens; calls and tokens in the last minute
    tokens = [0, 0, 0, 0]
    recent_calls = recent_tokens = simulated = 0
    cost = Decimal(0)
    for (outcome, count, simulated_here, *token_sums, cost_here, recent_here,
         recent_tokens_here) in session.execute(
        select(
            Attempt.outcome, func.count(), func.count().filter(Attempt.simulated.is_(True)),
            func.coalesce(func.sum(Attempt.input_tokens), 0),
            func.coalesce(func.sum(Attempt.cached_tokens), 0),
            func.coalesce(func.sum(Attempt.output_tokens), 0),
            func.coalesce(func.sum(Attempt.reasoning_tokens), 0),
            func.coalesce(func.sum(Attempt.cost_usd), 0),
            func.coalesce(func.sum(case((recent, 1), else_=0)), 0),
            func.coalesce(func.sum(case(
                (recent, Attempt.input_tokens + Attempt.output_tokens), else_=0)), 0),
        ).where(Attempt.run_id == run_id).group_by(Attempt.outcome)
    ):
        by_outcome[outcome] = count
        simulated += int(simulated_here)
        tokens = [total + int(more) for total, more in zip(tokens, token_sums, strict=True)]
        cost += Decimal(str(cost_here))
        recent_calls += int(recent_here)
        recent_tokens += int(recent_tokens_here)
    errors = session.execute(
        select(Item.last_error_class, Item.last_error_code, func.count())
        .where(Item.run_id == run_id, Item.status == ItemStatus.FAILED)
        .group_by(Item.last_error_class, Item.last_error_code)
    )
    called, cost_per_item = _cost_per_item(session, run_id)
    duplicates = session.scalar(select(func.count()).select_from(RunDuplicate)
                                .where(RunDuplicate.run_id == run_id)) or 0
    total = sum(by_status.values())
    still_open = total - by_status.get(ItemStatus.SUCCEEDED, 0) \
        - by_status.get(ItemStatus.FAILED, 0)
    average = cost / called if called else Decimal(0)
    return RunReport(
        budget_usd=run.budget_usd, in_flight_usd=run.reserved_usd,
        projected_cost_usd=cost + average * still_open, cost_per_item=cost_per_item,
        attempts_by_outcome=by_outcome, budget_wait_seconds=waited_ms / 1000,
        last_minute_requests=recent_calls, last_minute_tokens=recent_tokens,
        run_id=run.id, pipeline=run.pipeline, pipeline_version=run.pipeline_version,
        model=run.model, status=run.status, status_reason=run.status_reason,
        mode=run.mode, schedule=run.schedule,
        created_at=run.created_at, finished_at=run.finished_at,
        total=total, by_status=by_status, documents_by_status=documents, reused=reused,
        duplicates=duplicates, simulated_calls=simulated,
        attempts=sum(by_outcome.values()), rate_limited=by_outcome.get("rate_limited", 0),
        input_tokens=tokens[0], cached_tokens=tokens[1], output_tokens=tokens[2],
        reasoning_tokens=tokens[3], cost_usd=cost,
        errors={f"{cls}:{code}": n for cls, code, n in errors},
    )


def _cost_per_item(session: Session, run_id: int) -> tuple[int, dict[str, float]]:
    """How many items made calls, and the p50, p90 and max of what each cost."""
    called = and_(Item.run_id == run_id, Item.calls > 0)
    if is_postgres(session):
        # Nearest rank, as _percentile: the first value at or past the share of the rows.
        # Sorted as float8: a tenth of the time numeric takes, and the figures are floats.
        cost = cast(Item.cost_usd, Float)
        row = session.execute(select(
            func.count(),
            func.percentile_disc(0.5).within_group(cost),
            func.percentile_disc(0.9).within_group(cost),
            func.max(Item.cost_usd)).where(called)).one()
        if not row[0]:
            return 0, {}
        return int(row[0]), {"p50": float(row[1]), "p90": float(row[2]), "max": float(row[3])}
    # SQLite has no percentiles; its runs are the small ones.
    ordered = sorted(Decimal(str(c)) for c in session.scalars(select(Item.cost_usd)
                                                                .where(called)))
    if not ordered:
        return 0, {}
    return len(ordered), {"p50": float(_percentile(ordered, 0.5)),
                          "p90": float(_percentile(ordered, 0.9)), "max": float(ordered[-1])}


def _percentile(ordered: Sequence[Decimal], share: float) -> Decimal:
    """The nearest-rank percentile of an ascending, non-empty sequence."""
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@dataclass(frozen=True)
class FailedDocument:
    """A document (or source) of a run that ended failed, and why."""

    item_id: int
    source: str
    error_code: str | None
    error_message: str | None


def failed_documents(session: Session, run_id: int, *, limit: int) -> list[FailedDocument]:
    """The first ``limit`` failed documents of a run, in item order (the views list these,
    then point to ``docpipe results RUN --failed`` for the rest)."""
    rows = session.execute(
        select(Item.id, Item.source, Item.last_error_code, Item.last_error_message)
        .where(Item.run_id == run_id, Item.parent_id.is_(None),
               Item.status == ItemStatus.FAILED)
        .order_by(Item.id).limit(limit))
    return [FailedDocument(*row) for row in rows]


@dataclass(frozen=True)
class ItemResult:
    """One line of ``docpipe results``."""

    item_id: int
    source: str
    content_hash: str | None
    status: str
    reused: bool
    output: dict[str, Any] | None
    error_class: str | None
    error_code: str | None
    error_message: str | None


def iter_item_results(session: Session, run_id: int, *, failed_only: bool = False
                      ) -> Iterator[ItemResult]:
    """Every document of the run (or only its failed ones) with its output or error, in
    item order, streamed.

    A long document is one line: its root's result (its chunks and reduces are not listed).
    """
    stmt = (
        select(
            Item.id, Item.source, Document.content_hash, Item.status, Item.reused, Result.output,
            Item.last_error_class, Item.last_error_code, Item.last_error_message,
        )
        .outerjoin(Document, Document.id == Item.document_id)
        .outerjoin(Result, Result.id == Item.result_id)
        .where(Item.run_id == run_id, Item.parent_id.is_(None))
        .order_by(Item.id)
        .execution_options(yield_per=500)
    )
    if failed_only:
        stmt = stmt.where(Item.status == ItemStatus.FAILED)
    for row in session.execute(stmt):
        yield ItemResult(*row)


def iter_document_results(session: Session, run_id: int, *, failed_only: bool = False
                          ) -> Iterator[Any]:
    """Each path of the run (a duplicate too), or only the failed ones, from the
    ``document_results`` view: status, output or error, tokens, cost, calls and latency.
    In item order, a duplicate after the path it matched; streamed."""
    view = document_results
    stmt = (select(*(column for column in view.c if column.name != "run_id"))
            .where(view.c.run_id == run_id)
            .order_by(view.c.item_id, view.c.duplicate_of.is_not(None), view.c.source)
            .execution_options(yield_per=500))
    if failed_only:
        stmt = stmt.where(view.c.status == ItemStatus.FAILED)
    yield from session.execute(stmt)


@dataclass(frozen=True)
class DocumentResult:
    """One line of ``docpipe results --pipeline``: a document's result from one version."""

    document_id: int
    source: str
    content_hash: str
    pipeline_version: str
    created_at: datetime
    output: dict[str, Any]


def iter_pipeline_results(session: Session, pipeline: str, *, version: str | None = None
                          ) -> Iterator[DocumentResult]:
    """Each document's latest result from ``pipeline``, or its result from ``version``.

    Results of every version are kept, so an older one stays readable after a change.
    """
    # A document-level result is one a top-level item holds: not a chunk's or a reduce's.
    top_level = select(Item.id).where(Item.result_id == Result.id,
                                      Item.parent_id.is_(None)).exists()
    stmt = (
        select(Document.id, Document.source, Result.content_hash, Result.pipeline_version,
               Result.created_at, Result.output)
        .join(Document, Document.id == Result.document_id)
        .where(Result.pipeline == pipeline, top_level)
        .order_by(Document.id, Result.created_at.desc(), Result.id.desc())
        .execution_options(yield_per=500)
    )
    if version is not None:
        stmt = stmt.where(Result.pipeline_version == version)
    last = None
    for row in session.execute(stmt):
        if row[0] != last:
            last = row[0]
            yield DocumentResult(*row)
