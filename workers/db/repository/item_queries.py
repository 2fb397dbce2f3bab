"""Reads of items: what a worker loads with an item it holds (its run, document, media and a
stored result it could reuse), which items need a message, which are suspects."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    and_,
    case,
    func,
    or_,
    select,
)
from sqlalchemy.orm import Session

from pipelines.media import Attachment
from workers.db.dialect import any_in
from workers.db.models import (
    Document,
    Item,
    ItemStatus,
    Result,
    Run,
    RunMode,
    RunStatus,
    utcnow,
)
from workers.db.repository.documents import attachments


@dataclass(frozen=True)
class ClaimedItem:
    """An item a worker holds under a lease, with what it needs to process it."""

    id: int
    run_id: int
    attempts: int
    chunk_index: int
    pipeline: str
    pipeline_version: str
    model: str
    document_id: int
    content_hash: str
    text: str
    #: The error of the previous attempt: a repair follows a ``bad_output``.
    last_error_class: str | None = None
    last_error_code: str | None = None
    #: How often a worker was lost while holding this item (see ``Item.worker_losses``).
    worker_losses: int = 0
    #: The run's budget in dollars, if it has one.
    budget_usd: Decimal | None = None
    #: Where the item sits in a long document's tree (see ``Item.level``).
    level: int = 0
    parent_id: int | None = None
    text_start: int | None = None
    text_end: int | None = None
    #: The document's images and scanned PDFs, if it has any.
    attachments: tuple[Attachment, ...] = ()
    #: The run's :class:`~workers.db.models.RunMode`.
    mode: str = RunMode.LIVE
    #: A result already stored for the same content, pipeline version and chunk, found
    #: when the item was loaded: the item can reuse it instead of calling.
    stored_result_id: int | None = None


def part_outputs(session: Session, item_id: int) -> list[dict[str, Any]]:
    """The results of a reduce item's parts, in document order."""
    return list(session.scalars(
        select(Result.output).join(Item, Item.result_id == Result.id)
        .where(Item.parent_id == item_id).order_by(Item.id)))


def batched_items(session: Session, batch_id: int) -> dict[int, ClaimedItem]:
    """The items still waiting in a batch, with what saving their results needs."""
    return load_items(session, and_(Item.batch_id == batch_id,
                                     Item.status == ItemStatus.BATCHED))


def items_by_id(session: Session, item_ids: Sequence[int]) -> dict[int, ClaimedItem]:
    """Items with what building their requests needs (text, media, place in the tree)."""
    return load_items(session, any_in(session, Item.id, item_ids, BigInteger))


def load_items(session: Session, condition: Any) -> dict[int, ClaimedItem]:
    # The lookup of a reusable result rides along, saving the worker a transaction per item.
    stored = (select(Result.id).where(Result.content_hash == Document.content_hash,
                                      Result.pipeline_version == Run.pipeline_version,
                                      Result.chunk_index == Item.chunk_index)
              .limit(1).scalar_subquery())
    rows = session.execute(
        select(
            Item.id, Item.run_id, Item.attempts, Item.chunk_index, Run.pipeline,
            Run.pipeline_version, Run.model, Document.id.label("document_id"),
            Document.content_hash, Document.text, Item.last_error_class, Item.last_error_code,
            Item.worker_losses, Run.budget_usd, Item.level, Item.parent_id, Item.text_start,
            Item.text_end, Run.mode, Document.attachments, stored.label("stored_result_id"),
        )
        .join(Run, Run.id == Item.run_id)
        .join(Document, Document.id == Item.document_id)
        .where(condition))
    loaded = {}
    for row in rows:
        fields = row._asdict()
        fields["attachments"] = attachments(session, row.document_id) if row.attachments else ()
        loaded[row.id] = ClaimedItem(**fields)
    return loaded


def suspects_among(session: Session, item_ids: Sequence[int], *, alone_from: int = 1
                   ) -> list[int]:
    """Which of ``item_ids`` run alone: workers were lost holding them ``alone_from`` times,
    or their lease just expired (the claim that takes them over counts a loss)."""
    if not item_ids:
        return []
    lost_now = and_(Item.status == ItemStatus.RUNNING, Item.lease_expires_at < utcnow())
    return list(session.scalars(
        select(Item.id).where(any_in(session, Item.id, item_ids, BigInteger),
                              or_(Item.worker_losses >= alone_from, lost_now))
        .order_by(Item.id)))


def suspected_losses(session: Session, item_id: int) -> int:
    """How often workers were lost holding the item, counting a loss not yet claimed over."""
    lost_now = and_(Item.status == ItemStatus.RUNNING, Item.lease_expires_at < utcnow())
    return int(session.scalar(
        select(Item.worker_losses + case((lost_now, 1), else_=0)).where(Item.id == item_id)
    ) or 0)


def items_to_requeue(
    session: Session, *, run_id: int | None = None, queued_before: datetime | None = None,
    due_before: datetime | None = None, lock: bool = False,
) -> dict[str, list[int]]:
    """Items of active runs that need a (new) message, grouped by their run's queue.

    Pending items never had one; retry items are due (at once if no countdown message was
    sent for them, else after ``due_before``); running items lost their worker (lease
    expired); queued items older than ``queued_before`` were probably lost by the broker.
    ``due_before`` (default now) lets a periodic sweep leave alone pending and retry items
    whose own message is still on its way. ``lock`` takes the rows for this transaction
    (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's write lock serializes anyway), so
    reconcilers running at once split the items instead of sending each twice.
    """
    now = utcnow()
    due_before = due_before or now
    due = or_(
        and_(Item.status == ItemStatus.PENDING, Item.updated_at <= due_before),
        and_(Item.status == ItemStatus.RETRY,
             or_(Item.not_before.is_(None), Item.not_before <= due_before,
                 # Parked with no message on its way: due the moment its wait is over.
                 and_(Item.queued_at.is_(None), Item.not_before <= now))),
        and_(Item.status == ItemStatus.RUNNING, Item.lease_expires_at < now),
    )
    if queued_before is not None:
        due = or_(due, and_(Item.status == ItemStatus.QUEUED, Item.queued_at < queued_before))
    stmt = (
        select(Item.id, Run.queue)
        .join(Run, Run.id == Item.run_id)
        .where(due, Run.status.in_(RunStatus.ACTIVE),
               or_(Run.mode != RunMode.BATCH, Item.send_live),
               Item.document_id.is_not(None))
        .order_by(Item.id)
    )
    if run_id is not None:
        stmt = stmt.where(Item.run_id == run_id)
    if lock:
        stmt = stmt.with_for_update(skip_locked=True, of=Item)
    by_queue: dict[str, list[int]] = {}
    for item_id, queue in session.execute(stmt):
        by_queue.setdefault(queue, []).append(item_id)
    return by_queue


def count_queued(session: Session) -> int:
    """Items of active runs whose message should be in the broker right now."""
    return int(session.scalar(
        select(func.count()).select_from(Item).join(Run, Run.id == Item.run_id)
        .where(Item.status == ItemStatus.QUEUED, Run.status.in_(RunStatus.ACTIVE))) or 0)


def status_counts(session: Session, run_id: int) -> dict[str, int]:
    rows = session.execute(
        select(Item.status, func.count()).where(Item.run_id == run_id).group_by(Item.status)
    )
    return dict(rows.all())
