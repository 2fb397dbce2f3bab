"""Items: every write of ``Item.status``, one function per transition of
:mod:`workers.db.states`, each guarded by the states that transition starts from; and the
loading of claimed items with what processing them needs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    and_,
    bindparam,
    case,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from pipelines.chunking import Node
from workers.db import states
from workers.db.dialect import (
    BATCH,
    CLOCK_SKEW,
    ITEM_ARRAYS,
    any_in,
    insert_for,
    is_postgres,
    table_of,
    unnest,
)
from workers.db.models import (
    Item,
    ItemStatus,
    Run,
    RunDuplicate,
    RunMode,
    RunStatus,
    utcnow,
)
from workers.db.repository.attempts import close_lost_attempts
from workers.db.repository.item_queries import ClaimedItem, load_items


def _from(transition: states.Transition, column: Any = Item.status) -> ColumnElement[bool]:
    """The transition's guard: the item is in one of the states it may start from. A
    transition open to every state needs none (and an executemany cannot expand an IN)."""
    if transition.sources == states.ALL:
        return true()
    return column.in_(sorted(transition.sources))  # type: ignore[no-any-return]


def add_items(session: Session, run_id: int, documents: Iterable[tuple[int, str]]) -> list[int]:
    """Add one pending item per (document id, source); a document already in the run is skipped.

    Returns the ids of the items created.
    """
    now = utcnow()
    documents = list(documents)
    created: list[int] = []
    if not documents:
        return created
    conflict = ["run_id", "document_id", "chunk_index"]
    if is_postgres(session):
        rows = unnest(ITEM_ARRAYS)
        stmt = postgres_insert(table_of(Item)).from_select(
            ["document_id", "source", "run_id", "chunk_index", "status", "created_at",
             "updated_at"],
            select(rows.c.document_id, rows.c.source, bindparam("run_id", type_=Integer),
                   literal(0), bindparam("status", type_=String),
                   bindparam("now", type_=table_of(Item).c.created_at.type),
                   bindparam("now", type_=table_of(Item).c.created_at.type)),
        ).on_conflict_do_nothing(index_elements=conflict).returning(table_of(Item).c.id)
        for start in range(0, len(documents), BATCH):
            chunk = documents[start : start + BATCH]
            created.extend(session.scalars(stmt, {
                "document_id": [doc_id for doc_id, _ in chunk],
                "source": [source for _, source in chunk], "run_id": run_id,
                "status": ItemStatus.PENDING, "now": now}))
        return created
    rows_sqlite = [
        {"run_id": run_id, "document_id": doc_id, "source": source, "chunk_index": 0,
         "status": ItemStatus.PENDING, "created_at": now, "updated_at": now}
        for doc_id, source in documents
    ]
    insert_rows = (sqlite_insert(Item).on_conflict_do_nothing(index_elements=conflict)
                   .returning(Item.id))
    for start in range(0, len(rows_sqlite), BATCH):
        created.extend(session.scalars(insert_rows, rows_sqlite[start : start + BATCH]))
    return created


def add_item_tree(session: Session, run_id: int, document_id: int, source: str,
                  nodes: Sequence[Node]) -> list[int]:
    """Add a long document's items: its chunks (pending) and reduces (blocked on them).

    ``nodes`` come parents first (see :func:`pipelines.chunking.plan`). Returns the ids of
    the chunk items, to be sent; none if the document is already in the run.
    """
    exists = session.scalar(select(Item.id).where(
        Item.run_id == run_id, Item.document_id == document_id).limit(1))
    if exists is not None:
        return []
    now = utcnow()
    ids: dict[int, int] = {}
    leaves: list[int] = []
    for node in nodes:
        item = Item(
            run_id=run_id, document_id=document_id, source=source, chunk_index=node.key,
            level=node.level, parent_id=ids[node.parent] if node.parent is not None else None,
            text_start=node.start if node.level == 0 else None,
            text_end=node.end if node.level == 0 else None,
            status=ItemStatus.PENDING if node.level == 0 else ItemStatus.BLOCKED,
            created_at=now, updated_at=now)
        session.add(item)
        session.flush()
        ids[node.key] = item.id
        if node.level == 0:
            leaves.append(item.id)
    return leaves


def add_failed_items(
    session: Session, run_id: int, failures: Iterable[tuple[str, str, str]]
) -> int:
    """Record sources that could not be read as failed items: (source, code, message); a
    source the run already has a failed item for (an ingest read again) is skipped."""
    now = utcnow()
    failures = list(failures)
    known: set[str] = set()
    if failures:
        known = set(session.scalars(select(Item.source).where(
            Item.run_id == run_id, Item.document_id.is_(None),
            Item.source.in_({source for source, _, _ in failures}))))
    rows = [
        {"run_id": run_id, "document_id": None, "source": source, "chunk_index": 0,
         "status": ItemStatus.FAILED, "last_error_class": "document", "last_error_code": code,
         "last_error_message": message, "created_at": now, "updated_at": now, "finished_at": now}
        for source, code, message in failures if source not in known
    ]
    if rows:
        session.execute(insert_for(session, Item).values(rows))
    return len(rows)


def add_duplicates(session: Session, run_id: int, documents: Sequence[tuple[int, str]]
                   ) -> int:
    """Record the (document id, source) pairs whose document the run already has under
    another source: duplicates, which share that item's result. A source recorded before
    (an ingest read again) is skipped. Returns how many were recorded."""
    if not documents:
        return 0
    first = dict(session.execute(
        select(Item.document_id, Item.source).where(
            Item.run_id == run_id, Item.parent_id.is_(None),
            any_in(session, Item.document_id, sorted({d for d, _ in documents}), Integer))
    ).all())
    now = utcnow()
    rows = [{"run_id": run_id, "document_id": document_id, "source": source,
             "created_at": now}
            for document_id, source in documents if first.get(document_id) not in (None, source)]
    if not rows:
        return 0
    inserted = session.execute(
        insert_for(session, RunDuplicate).values(rows)
        .on_conflict_do_nothing(index_elements=["run_id", "source"])
        .returning(RunDuplicate.id))
    return len(inserted.all())


def mark_queued(session: Session, item_ids: Sequence[int]) -> None:
    """Note that messages were sent for ``item_ids`` (only those still pending)."""
    now = utcnow()
    for start in range(0, len(item_ids), BATCH):
        session.execute(
            update(Item)
            .where(any_in(session, Item.id, item_ids[start : start + BATCH], BigInteger),
                   _from(states.QUEUE))
            .values(status=states.QUEUE.target, queued_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )


def claim_item(session: Session, item_id: int, *, lease_seconds: int, holder: str,
               alone_from: int | None = None) -> ClaimedItem | None:
    """Take the item under a lease for ``holder`` (a worker process's heartbeat token) if it
    is waiting, or held under a lease that ran out, and its run is active; else None.

    One conditional UPDATE: of two workers given the same item, exactly one gets it. With
    ``alone_from`` an item whose workers were lost that many times (see
    :func:`suspected_losses`) is left alone: it is claimed only under the process's lock.
    """
    return _claim(session, Item.id == item_id, lease_seconds=lease_seconds, holder=holder,
                  alone_from=alone_from, expired=True).get(item_id)


def claim_items(session: Session, item_ids: Sequence[int], *, lease_seconds: int,
                holder: str, alone_from: int = 1) -> dict[int, ClaimedItem]:
    """Take every waiting item of ``item_ids`` under a lease, in one conditional UPDATE.

    The group form of :func:`claim_item` with ``alone_from``: items whose workers were lost
    that many times, and items whose lease expired, are left for :func:`claim_item` to take
    one at a time. Returns the claimed items by id; an id missing from the answer is done,
    held elsewhere, not due, paused or a suspect.
    """
    if not item_ids:
        return {}
    return _claim(session, any_in(session, Item.id, item_ids, BigInteger),
                  lease_seconds=lease_seconds, holder=holder, alone_from=alone_from,
                  expired=False)


def _claim(session: Session, which: ColumnElement[bool], *, lease_seconds: int, holder: str,
           alone_from: int | None, expired: bool) -> dict[int, ClaimedItem]:
    """The one claim: :data:`~workers.db.states.CLAIM` for the items of ``which`` that may
    be claimed now (with ``expired``, also those whose lease ran out: a loss each)."""
    now = utcnow()
    waiting = [Item.status.in_([ItemStatus.PENDING, ItemStatus.QUEUED]),
               and_(Item.status == ItemStatus.RETRY,
                    or_(Item.not_before.is_(None), Item.not_before <= now + CLOCK_SKEW))]
    if expired:
        waiting.append(and_(Item.status == ItemStatus.RUNNING, Item.lease_expires_at < now))
    # Batch runs are sent by the batch submitter, never by a worker (unless, to meet the
    # run's deadline, an item is sent live).
    run_active = (
        select(Run.id).where(Run.id == Item.run_id, Run.status.in_(RunStatus.ACTIVE),
                             or_(Run.mode != RunMode.BATCH, Item.send_live)).exists()
    )
    condition = and_(which, Item.document_id.is_not(None), _from(states.CLAIM), or_(*waiting),
                     run_active)
    if alone_from is not None:
        condition = and_(condition, _losses_with_this_claim() < alone_from)
    claimed = list(session.scalars(
        update(Item)
        .where(condition)
        .values(status=states.CLAIM.target, attempts=Item.attempts + 1,
                worker_losses=_losses_with_this_claim(),
                lease_expires_at=now + timedelta(seconds=lease_seconds), holder=holder,
                not_before=None, updated_at=now)
        .returning(Item.id)
        .execution_options(synchronize_session=False)))
    if not claimed:
        return {}
    items = load_items(session, any_in(session, Item.id, claimed, BigInteger))
    # Only the lease holder calls, and every way a holder is lost counts a loss, so only
    # then can an attempt still be in flight: its holder's (or one that outlived its lease,
    # which overwrites this when it finishes after all).
    for item in items.values():
        if item.worker_losses:
            close_lost_attempts(session, item.id)
    return items


def _losses_with_this_claim() -> ColumnElement[int]:
    """The item's worker losses once claimed: a claim over a lease that expired counts one."""
    return Item.worker_losses + case((Item.status == ItemStatus.RUNNING, 1), else_=0)


def void_dead_claims(session: Session, item_ids: Sequence[int]) -> list[int]:
    """:data:`~workers.db.states.VOID_DEAD`: the claims on ``item_ids`` of a worker process
    found dead are void; each counts a lost worker, and its in-flight calls are recorded lost.

    Returns the ids voided, to be sent again (a sweep racing this one voids none twice).
    """
    now = utcnow()
    voided: list[int] = []
    for start in range(0, len(item_ids), BATCH):
        voided += session.scalars(
            update(Item)
            .where(Item.id.in_(item_ids[start : start + BATCH]), _from(states.VOID_DEAD))
            .values(status=states.VOID_DEAD.target, lease_expires_at=None, queued_at=now,
                    worker_losses=Item.worker_losses + 1, updated_at=now)
            .returning(Item.id)
            .execution_options(synchronize_session=False))
    for item_id in voided:
        close_lost_attempts(session, item_id)
    return voided


def unblock_parent(session: Session, parent_id: int) -> bool:
    """Queue a reduce item once every one of its parts has succeeded. Safe to race.

    Returns True for exactly one caller: the one that should send its message.
    """
    open_parts = (select(Item.id).where(Item.parent_id == parent_id,
                                        Item.status != ItemStatus.SUCCEEDED).exists())
    now = utcnow()
    result = session.execute(
        update(Item)
        .where(Item.id == parent_id, _from(states.UNBLOCK), ~open_parts)
        .values(status=states.UNBLOCK.target, queued_at=now, updated_at=now)
        .execution_options(synchronize_session=False))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def fail_ancestors(session: Session, item_id: int, *, code: str, message: str) -> None:
    """Fail every reduce above a failed part: the whole document cannot be done."""
    parent_id = session.scalar(select(Item.parent_id).where(Item.id == item_id))
    while parent_id is not None:
        fail_item(session, parent_id, error_class="part_failed", code=code, message=message)
        parent_id = session.scalar(select(Item.parent_id).where(Item.id == parent_id))


def reuse_result(session: Session, item_id: int, result_id: int) -> None:
    """Complete an item with a result that already existed; no call was made."""
    complete_many(session, [Completion(item_id, result_id, reused=True)], now=utcnow())


def _finished_clean(now: datetime) -> dict[str, Any]:
    """What a success writes besides its status and result: no lease, no wait, no error,
    finished now."""
    return {"lease_expires_at": None, "not_before": None,
            "finished_at": now, "updated_at": now, "last_error_class": None,
            "last_error_code": None, "last_error_message": None}


@dataclass(frozen=True)
class Completion:
    """A success for :func:`complete_many`: the item, its result, and what to add to its
    tallies (the call, unless already counted, and the time it waited for budget)."""

    item_id: int
    result_id: int
    calls: int = 0
    cost_usd: Decimal = Decimal(0)
    waited_ms: int = 0
    #: Its result existed before: no call was made for it.
    reused: bool = False


def complete_many(session: Session, completions: Sequence[Completion], *, now: datetime
                  ) -> None:
    """:data:`~workers.db.states.SUCCEED` for items, in one executemany."""
    items = table_of(Item)
    session.connection().execute(
        update(items)
        .where(items.c.id == bindparam("_id"), _from(states.SUCCEED, items.c.status))
        .values(
            status=states.SUCCEED.target, result_id=bindparam("_result"),
            reused=bindparam("_reused"),
            **_finished_clean(now),
            calls=items.c.calls + bindparam("_calls"),
            cost_usd=items.c.cost_usd + bindparam("_cost"),
            budget_wait_ms=items.c.budget_wait_ms + bindparam("_waited")),
        [{"_id": c.item_id, "_result": c.result_id, "_reused": c.reused, "_calls": c.calls,
          "_cost": c.cost_usd, "_waited": c.waited_ms} for c in completions])


def schedule_retry(
    session: Session, item_id: int, *, not_before: datetime, error_class: str, code: str,
    message: str, message_sent: bool = True,
) -> None:
    """Park the item until ``not_before``; a message or the reconciler brings it back.

    ``message_sent`` says whether a countdown message is on its way. Without one,
    ``queued_at`` is cleared and the reconciler sends the item as soon as it is due.
    """
    now = utcnow()
    session.execute(
        update(Item)
        .where(Item.id == item_id, _from(states.RETRY))
        .values(
            status=states.RETRY.target, not_before=not_before, lease_expires_at=None,
            queued_at=now if message_sent else None,
            last_error_class=error_class, last_error_code=code, last_error_message=message,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )


def fail_item(session: Session, item_id: int, *, error_class: str, code: str, message: str) -> None:
    """Fail the item with its error; ``docpipe replay`` can bring it back."""
    now = utcnow()
    session.execute(
        update(Item)
        .where(Item.id == item_id, _from(states.FAIL))
        .values(
            status=states.FAIL.target, lease_expires_at=None, not_before=None, finished_at=now,
            last_error_class=error_class, last_error_code=code, last_error_message=message,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )


def release_after_error(session: Session, item_id: int, *, retry_at: datetime | None,
                        error_class: str, code: str, message: str) -> bool:
    """Hand back an item whose processing raised: due again at ``retry_at``, or failed if None.

    Only while it is still running: an error raised after the item completed changes
    nothing. No message is assumed on its way; the reconciler sends the item when due.
    """
    now = utcnow()
    transition = (states.RELEASE_AFTER_ERROR if retry_at is not None
                  else states.RELEASE_AFTER_ERROR_FAILED)
    values: dict[str, Any] = (
        {"status": transition.target, "not_before": retry_at, "queued_at": None}
        if retry_at is not None else
        {"status": transition.target, "not_before": None, "finished_at": now})
    result = session.execute(
        update(Item)
        .where(Item.id == item_id, _from(transition))
        .values(**values, lease_expires_at=None, last_error_class=error_class,
                last_error_code=code, last_error_message=message, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def park_item(session: Session, item_id: int, *, not_before: datetime, waited_ms: int = 0,
              message_sent: bool = True) -> None:
    """Put a claimed item back until ``not_before`` without using up an attempt.

    For waits that are nobody's fault (no budget yet, breaker open); errors are untouched so a
    pending repair stays a repair. ``message_sent`` as for :func:`schedule_retry`.
    """
    session.execute(
        update(Item)
        .where(Item.id == item_id, _from(states.PARK))
        .values(
            status=states.PARK.target, not_before=not_before, lease_expires_at=None,
            queued_at=utcnow() if message_sent else None,
            attempts=Item.attempts - 1, budget_wait_ms=Item.budget_wait_ms + waited_ms,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )


def add_budget_wait(session: Session, item_id: int, waited_ms: int) -> None:
    """Add time an item's call waited for budget before it was sent."""
    if waited_ms > 0:
        session.execute(
            update(Item).where(Item.id == item_id)
            .values(budget_wait_ms=Item.budget_wait_ms + waited_ms)
            .execution_options(synchronize_session=False)
        )


def release_item(session: Session, item_id: int, *, error_class: str, code: str, message: str
                 ) -> None:
    """Give a claimed item back untouched (its run was paused): the claim does not count."""
    session.execute(
        update(Item)
        .where(Item.id == item_id, _from(states.RELEASE))
        .values(
            status=states.RELEASE.target, attempts=Item.attempts - 1, lease_expires_at=None,
            last_error_class=error_class, last_error_code=code, last_error_message=message,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )


def reset_for_replay(session: Session, run_id: int, statuses: Sequence[str]) -> list[int]:
    """:data:`~workers.db.states.REPLAY` for the run's items in ``statuses``: pending,
    attempts and errors cleared; return their ids.

    Only the states replay may start from are touched (never an item a worker or a batch
    holds). Items without a document (unreadable sources) stay failed: nothing to call the
    API with. Each item is reset by one caller only, so concurrent replays do not double
    the work.
    """
    now = utcnow()
    return list(session.scalars(
        update(Item)
        .where(Item.run_id == run_id, Item.status.in_(statuses), _from(states.REPLAY),
               Item.document_id.is_not(None))
        .values(
            status=states.REPLAY.target, attempts=0, lease_expires_at=None, not_before=None,
            finished_at=None, last_error_class=None, last_error_code=None,
            last_error_message=None, updated_at=now,
        )
        .returning(Item.id)
        .execution_options(synchronize_session=False)))


def cancel_unsent(session: Session, run_id: int) -> None:
    """:data:`~workers.db.states.CANCEL`: the run's items not yet sent fail as cancelled."""
    now = utcnow()
    session.execute(
        update(Item)
        .where(Item.run_id == run_id, _from(states.CANCEL))
        .values(status=states.CANCEL.target, last_error_class="cancelled",
                last_error_code="cancelled", last_error_message="the run was cancelled",
                finished_at=now, updated_at=now)
        .execution_options(synchronize_session=False))


def move_into_batch(session: Session, batch_id: int, item_ids: Sequence[int]) -> list[int]:
    """:data:`~workers.db.states.BATCH`: those of ``item_ids`` still waiting join the
    batch (an attempt each); return the ids moved."""
    return list(session.scalars(
        update(Item)
        .where(Item.id.in_(item_ids), _from(states.BATCH))
        .values(status=states.BATCH.target, batch_id=batch_id, attempts=Item.attempts + 1,
                not_before=None, updated_at=utcnow())
        .returning(Item.id)
        .execution_options(synchronize_session=False)))


def unbatch_all(session: Session, batch_id: int) -> None:
    """:data:`~workers.db.states.UNBATCH` for every item of a batch that never reached
    the provider: they wait for the next one, and the attempt does not count."""
    session.execute(update(Item).where(Item.batch_id == batch_id, _from(states.UNBATCH))
                    .values(status=states.UNBATCH.target, batch_id=None,
                            attempts=Item.attempts - 1, updated_at=utcnow()))


def mark_requeued(session: Session, item_ids: Sequence[int]) -> None:
    """Record that the reconciler is sending ``item_ids`` again.

    They become queued, so a later sweep leaves them alone. An item still running under an
    expired lease was lost with its worker: that counts as a lost worker here, since no claim
    will see it running any more.
    """
    now = utcnow()
    for start in range(0, len(item_ids), BATCH):
        session.execute(
            update(Item)
            .where(Item.id.in_(item_ids[start : start + BATCH]), _from(states.REQUEUE))
            .values(status=states.REQUEUE.target, queued_at=now, updated_at=now,
                    lease_expires_at=None,
                    worker_losses=Item.worker_losses
                    + case((Item.status == ItemStatus.RUNNING, 1), else_=0))
            .execution_options(synchronize_session=False)
        )


def touch_queued(session: Session, item_ids: Sequence[int]) -> None:
    """Record that new messages were sent for ``item_ids``."""
    now = utcnow()
    for start in range(0, len(item_ids), BATCH):
        session.execute(
            update(Item)
            .where(Item.id.in_(item_ids[start : start + BATCH]),
                   _from(states.RESEND))
            .values(status=states.RESEND.target, queued_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )


#: The states a batch run's item waits in before it joins a batch.
BATCHABLE = tuple(sorted(states.BATCH.sources))


def return_to_batching(session: Session, item_id: int, *, error_class: str, code: str,
                       message: str) -> None:
    """A line that failed in a way worth another try: the item waits for the next batch."""
    session.execute(update(Item).where(Item.id == item_id, _from(states.UNBATCH))
                    .values(status=states.UNBATCH.target, batch_id=None,
                            last_error_class=error_class, last_error_code=code,
                            last_error_message=message, updated_at=utcnow()))


def send_live(session: Session, item_id: int, *, error_class: str, code: str, message: str
              ) -> bool:
    """Hand a batch run's item to the workers: a new batch could miss the run's deadline.

    True when the item moved (the caller then sends its message).
    """
    moved = session.execute(
        update(Item).where(Item.id == item_id, _from(states.SEND_LIVE))
        .values(status=states.SEND_LIVE.target, batch_id=None, send_live=True, queued_at=utcnow(),
                last_error_class=error_class, last_error_code=code,
                last_error_message=message, updated_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
    return bool(moved)
