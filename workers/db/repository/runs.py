"""Runs: created, started, paused, resumed, replayed, cancelled and finished."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    case,
    func,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from workers.db.models import (
    BatchStatus,
    Item,
    ItemStatus,
    Run,
    RunMode,
    RunStatus,
    utcnow,
)
from workers.db.repository.batches import run_batches
from workers.db.repository.item_queries import status_counts
from workers.db.repository.items import cancel_unsent, reset_for_replay
from workers.errors import ScheduleBusy


def create_run(session: Session, *, pipeline: str, version: str, model: str, queue: str,
               budget_usd: Decimal | None = None, schedule: str | None = None,
               mode: str = RunMode.LIVE, deadline_at: datetime | None = None,
               sources: dict[str, Any] | None = None) -> Run:
    """A new run in ``ingesting`` state: workers may start, but it cannot finish yet.

    Raises:
        ScheduleBusy: ``schedule`` already has an unfinished run (a unique index says so).
    """
    run = Run(
        pipeline=pipeline,
        pipeline_version=version,
        model=model,
        queue=queue,
        status=RunStatus.INGESTING,
        budget_usd=budget_usd,
        schedule=schedule,
        mode=mode,
        deadline_at=deadline_at,
        sources=sources,
        created_at=utcnow(),
    )
    if schedule is None:
        session.add(run)
        session.flush()
        return run
    try:
        with session.begin_nested():
            session.add(run)
            session.flush()
    except IntegrityError as exc:
        raise ScheduleBusy(f"schedule {schedule!r} has a run that has not finished") from exc
    return run


def unfinished_scheduled_run(session: Session, schedule: str) -> int | None:
    """The id of the schedule's unfinished run, if it has one."""
    return session.scalar(select(Run.id).where(Run.schedule == schedule,
                                               Run.status != RunStatus.FINISHED))


#: ``status_reason`` of a run paused by Ctrl-C on ``docpipe run``.
INTERRUPTED_REASON = "interrupted"


def interrupted_run(session: Session, *, version: str, sources: dict[str, Any]) -> int | None:
    """The latest run of pipeline ``version`` over ``sources`` that Ctrl-C (or anything that
    cut its ingest off) stopped: ``docpipe run`` on the same paths continues it."""
    candidates = session.scalars(
        select(Run).where(Run.pipeline_version == version,
                          (Run.status == RunStatus.INGESTING)
                          | ((Run.status == RunStatus.PAUSED)
                             & (Run.status_reason == INTERRUPTED_REASON)))
        .order_by(Run.id.desc()).limit(20))
    return next((run.id for run in candidates if run.sources == sources), None)


def get_run(session: Session, run_id: int) -> Run | None:
    """The run with ``run_id``."""
    return session.get(Run, run_id)


def list_runs(session: Session, limit: int = 20) -> list[Run]:
    """The most recent runs, newest first."""
    return list(session.scalars(select(Run).order_by(Run.id.desc()).limit(limit)))


def start_run(session: Session, run_id: int) -> None:
    """Ingest is complete: record the total and when, and let the run finish when its items
    do (a run paused meanwhile stays paused)."""
    total = session.scalar(select(func.count()).where(Item.run_id == run_id)) or 0
    session.execute(update(Run).where(Run.id == run_id)
                    .values(total_items=total, ingested_at=utcnow()))
    session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.INGESTING)
        .values(status=RunStatus.RUNNING)
    )


def finish_run_if_done(session: Session, run_id: int) -> bool:
    """Mark the run finished if it is running and no item is left to do. Safe to race."""
    open_items = (
        select(Item.id)
        .where(Item.run_id == run_id, Item.status.not_in(ItemStatus.TERMINAL))
        .exists()
    )
    result = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.RUNNING, ~open_items)
        .values(status=RunStatus.FINISHED, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    # Counted once, by the call that finished the run: every item calls this, and counting
    # the run's items each time made a run's cost grow with the square of its size.
    counts = status_counts(session, run_id)
    session.execute(
        update(Run).where(Run.id == run_id)
        .values(succeeded_items=counts.get(ItemStatus.SUCCEEDED, 0),
                failed_items=counts.get(ItemStatus.FAILED, 0))
        .execution_options(synchronize_session=False))
    return True


def running_run_ids(session: Session) -> list[int]:
    """Ids of runs in ``running`` state."""
    return list(session.scalars(select(Run.id).where(Run.status == RunStatus.RUNNING)))


def pause_run(session: Session, run_id: int, reason: str) -> None:
    """Pause an active run; workers stop claiming its items until it is resumed."""
    session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status.in_(RunStatus.ACTIVE))
        .values(status=RunStatus.PAUSED, status_reason=reason)
    )


def replay_items(session: Session, run_id: int, statuses: Sequence[str]) -> list[int]:
    """Reset the run's items in ``statuses`` to pending and reopen the run.

    Items without a document (unreadable sources) stay failed: nothing to call the API with.
    Each item is reset by one caller only, so concurrent replays do not double the work.
    """
    ids = reset_for_replay(session, run_id, statuses)
    if ids:
        session.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(status=RunStatus.RUNNING, status_reason=None, finished_at=None)
        )
    return ids


def replay_skipped(session: Session, run_id: int, statuses: Sequence[str]) -> dict[str, int]:
    """The run's items in ``statuses`` that replay leaves as they are, by error code: those
    of sources that were never read into a document (no request to send again)."""
    return {code or "unknown": count for code, count in session.execute(
        select(Item.last_error_code, func.count())
        .where(Item.run_id == run_id, Item.status.in_(statuses), Item.document_id.is_(None))
        .group_by(Item.last_error_code))}


def resume_run(session: Session, run_id: int, *, budget_usd: Decimal | None = None) -> None:
    """Reopen a paused run so its items can be claimed again, with a new budget if given."""
    if budget_usd is not None:
        session.execute(update(Run).where(Run.id == run_id).values(budget_usd=budget_usd))
    # A run paused before its ingest ended goes back to ingesting: it must not finish
    # before the rest of its documents are read.
    session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.PAUSED)
        .values(status=case((Run.ingested_at.is_(None), RunStatus.INGESTING),
                            else_=RunStatus.RUNNING), status_reason=None)
    )


def repin_run(session: Session, run_id: int, *, version: str, model: str) -> None:
    """Give a paused run its pipeline's fixed version: the items it has not finished are
    sent with the new request (results already stored keep the version that made them)."""
    session.execute(update(Run).where(Run.id == run_id, Run.status == RunStatus.PAUSED)
                    .values(pipeline_version=version, model=model))


def cancel_run(session: Session, run_id: int) -> list[str]:
    """Stop a run: it pauses as ``cancelled``, and items not yet sent fail as ``cancelled``.

    Items in flight (a live call, a batch at the provider) finish as they end: their answers
    are paid for, so they are kept. Returns the provider ids of the run's open batches, to
    cancel there.
    """
    session.execute(update(Run).where(Run.id == run_id, Run.status != RunStatus.FINISHED)
                    .values(status=RunStatus.PAUSED, status_reason=CANCELLED_REASON))
    cancel_unsent(session, run_id)
    finish_cancelled_run(session, run_id)
    return [b.provider_batch_id for b in run_batches(session, run_id)
            if b.provider_batch_id and b.status not in (BatchStatus.INGESTED,
                                                        *BatchStatus.PROVIDER_ENDED)]


#: The status reason of a cancelled run.
CANCELLED_REASON = "cancelled"


def finish_cancelled_run(session: Session, run_id: int) -> bool:
    """A cancelled run with nothing left in flight is finished (reason: cancelled)."""
    open_items = select(Item.id).where(Item.run_id == run_id,
                                       Item.status.not_in(ItemStatus.TERMINAL)).exists()
    counts = status_counts(session, run_id)
    result = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.PAUSED,
               Run.status_reason == CANCELLED_REASON, ~open_items)
        .values(status=RunStatus.FINISHED, finished_at=utcnow(),
                succeeded_items=counts.get(ItemStatus.SUCCEEDED, 0),
                failed_items=counts.get(ItemStatus.FAILED, 0))
        .execution_options(synchronize_session=False))
    return bool(result.rowcount)  # type: ignore[attr-defined]
