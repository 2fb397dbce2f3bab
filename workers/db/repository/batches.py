"""Batch API batches: docpipe's rows for the provider's batches."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    delete,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from workers.db.models import Batch as BatchRow
from workers.db.models import (
    BatchStatus,
    Item,
    Run,
    RunMode,
    RunStatus,
    utcnow,
)
from workers.db.repository.items import BATCHABLE, move_into_batch, unbatch_all


def batchable_items(session: Session, *, limit: int) -> dict[int, list[int]]:
    """Items of active batch runs waiting to be sent, by run (oldest first)."""
    now = utcnow()
    stmt = (
        select(Item.run_id, Item.id)
        .join(Run, Run.id == Item.run_id)
        .where(Run.mode == RunMode.BATCH, Run.status.in_(RunStatus.ACTIVE),
               Item.document_id.is_not(None), Item.status.in_(BATCHABLE), ~Item.send_live,
               or_(Item.not_before.is_(None), Item.not_before <= now))
        .order_by(Item.id)
        .limit(limit)
    )
    by_run: dict[int, list[int]] = {}
    for run_id, item_id in session.execute(stmt):
        by_run.setdefault(run_id, []).append(item_id)
    return by_run


def begin_batch(session: Session, run_id: int, item_ids: Sequence[int], *, input_bytes: int
                ) -> tuple[int, list[int]]:
    """Record a batch and move its items into it; return its id and the items moved.

    Conditional: an item another submitter took, or one no longer waiting, is left out.
    """
    batch = BatchRow(run_id=run_id, status=BatchStatus.SUBMITTING, items=0,
                     input_bytes=input_bytes, created_at=utcnow())
    session.add(batch)
    session.flush()
    moved = move_into_batch(session, batch.id, item_ids)
    batch.items = len(moved)
    return batch.id, moved


def drop_batch(session: Session, batch_id: int) -> None:
    """Forget a batch that got no items."""
    session.execute(delete(BatchRow).where(BatchRow.id == batch_id, BatchRow.items == 0))


def batch_submitted(session: Session, batch_id: int, *, provider_batch_id: str,
                    input_file_id: str, status: str, input_bytes: int) -> None:
    """The provider accepted the batch."""
    session.execute(update(BatchRow).where(BatchRow.id == batch_id).values(
        provider_batch_id=provider_batch_id, input_file_id=input_file_id, status=status,
        input_bytes=input_bytes))


def batch_submit_failed(session: Session, batch_id: int, error: str) -> None:
    """The batch never reached the provider: its items wait for the next one."""
    unbatch_all(session, batch_id)
    session.execute(update(BatchRow).where(BatchRow.id == batch_id).values(
        status=BatchStatus.SUBMIT_FAILED, error=error, finished_at=utcnow()))


def release_stale_submits(session: Session, started_before: datetime) -> None:
    """Batches still ``submitting`` since before then were cut off: their items go back."""
    stale = session.scalars(select(BatchRow.id).where(
        BatchRow.status == BatchStatus.SUBMITTING, BatchRow.created_at < started_before)).all()
    for batch_id in stale:
        batch_submit_failed(session, batch_id, "cut off while it was being submitted")


def open_batches(session: Session) -> list[BatchRow]:
    """Batches at the provider that have not been taken in yet."""
    return list(session.scalars(select(BatchRow).where(
        BatchRow.provider_batch_id.is_not(None),
        BatchRow.status.not_in([BatchStatus.INGESTED, BatchStatus.SUBMIT_FAILED,
                                BatchStatus.SUBMITTING]))
        .order_by(BatchRow.id)))


def set_batch_status(session: Session, batch_id: int, status: str, *,
                     output_file_id: str | None = None, error_file_id: str | None = None
                     ) -> None:
    """Follow the provider's status (and its files, once it has them)."""
    values: dict[str, Any] = {"status": status}
    if output_file_id:
        values["output_file_id"] = output_file_id
    if error_file_id:
        values["error_file_id"] = error_file_id
    session.execute(update(BatchRow).where(BatchRow.id == batch_id).values(**values))


def batch_ingested(session: Session, batch_id: int) -> None:
    """Every line of the batch is in the database."""
    session.execute(update(BatchRow).where(BatchRow.id == batch_id).values(
        status=BatchStatus.INGESTED, finished_at=utcnow()))


def run_batches(session: Session, run_id: int) -> list[BatchRow]:
    """A run's batches, oldest first."""
    return list(session.scalars(select(BatchRow).where(BatchRow.run_id == run_id)
                                .order_by(BatchRow.id)))
