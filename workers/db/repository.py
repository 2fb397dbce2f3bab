"""Every query docpipe runs. Callers pass a session from :func:`session_scope`.

Writes that must happen once are conditional updates or insert-on-conflict, so a redelivered
message, a replay and a race between workers all end in the same rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    case,
    cast,
    delete,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import Insert as PostgresInsert
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pipelines.chunking import Node
from pipelines.media import Attachment
from workers.db.models import Attachment as AttachmentRow
from workers.db.models import (
    Attempt,
    AttemptOutcome,
    BatchStatus,
    Document,
    Item,
    ItemStatus,
    Result,
    Run,
    RunMode,
    RunStatus,
    utcnow,
)
from workers.db.models import Batch as BatchRow

#: The smallest amount the money columns hold (9 decimal places).
MONEY_EPSILON = Decimal("0.000000001")
#: Rows per statement in bulk writes.
BATCH = 500
#: A retry message may arrive this early against the database clock and still be honoured.
CLOCK_SKEW = timedelta(seconds=2)


def _insert(session: Session, model: type[Any]) -> PostgresInsert | SqliteInsert:
    """An INSERT for ``model`` in the dialect of ``session`` (both have on_conflict_do_nothing)."""
    if _postgres(session):
        return postgres_insert(model)
    return sqlite_insert(model)


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _in(session: Session, column: Any, values: Sequence[Any], element: Any) -> Any:
    """``column IN values``; on PostgreSQL ``= ANY(array)``, one parameter however many.

    An IN list of 500 placeholders is a new query text for psycopg to parse on every call.
    """
    if _postgres(session):
        return column == any_(bindparam("values", list(values), type_=ARRAY(element), unique=True))
    return column.in_(values)


#: (column, array element type) of the bulk inserts' ``unnest`` parameters.
_DOCUMENT_ARRAYS = (("content_hash", String), ("source", Text), ("media_type", String),
                    ("size_bytes", BigInteger), ("text", Text), ("attachments", Integer))
_ITEM_ARRAYS = (("document_id", BigInteger), ("source", Text))


def _table(model: type[Any]) -> Table:
    return model.metadata.tables[model.__tablename__]  # type: ignore[no-any-return]


def _unnest(arrays: Sequence[tuple[str, Any]]) -> Any:
    """A table of one row per array index, from one ARRAY parameter per column."""
    return func.unnest(*(bindparam(name, type_=ARRAY(element)) for name, element in arrays)
                       ).table_valued(*(name for name, _ in arrays)).render_derived()


# -- documents and runs ---------------------------------------------------------------------


@dataclass(frozen=True)
class NewDocument:
    """A document to store: what ingest hands the repository."""

    content_hash: str
    source: str
    media_type: str
    size_bytes: int
    text: str
    #: Images and scanned PDFs (see :class:`pipelines.media.Attachment`).
    attachments: tuple[Attachment, ...] = ()


def upsert_documents(session: Session, documents: Sequence[NewDocument]) -> dict[str, int]:
    """Store documents not seen before; return the id of every given content hash."""
    ids: dict[str, int] = {}
    postgres = _postgres(session)
    insert_new: PostgresInsert | SqliteInsert
    if postgres:
        # One statement whatever the batch: a row per index of one array per column.
        rows = _unnest(_DOCUMENT_ARRAYS)
        # On the table, not the mapped class: a Core statement, which the ORM's bulk insert
        # would otherwise take its parameters for rows.
        insert_new = postgres_insert(_table(Document)).from_select(
            [*(name for name, _ in _DOCUMENT_ARRAYS), "created_at"],
            select(*rows.c, bindparam("now", type_=_table(Document).c.created_at.type)),
        ).on_conflict_do_nothing(index_elements=["content_hash"])
    else:
        insert_new = sqlite_insert(Document).on_conflict_do_nothing(
            index_elements=["content_hash"])
    for start in range(0, len(documents), BATCH):
        chunk = documents[start : start + BATCH]
        now = utcnow()
        if postgres:
            session.execute(insert_new, {
                "content_hash": [d.content_hash for d in chunk],
                "source": [d.source for d in chunk], "media_type": [d.media_type for d in chunk],
                "size_bytes": [d.size_bytes for d in chunk], "text": [d.text for d in chunk],
                "attachments": [len(d.attachments) for d in chunk], "now": now})
        else:
            session.execute(insert_new, [
                {"content_hash": doc.content_hash, "source": doc.source,
                 "media_type": doc.media_type, "size_bytes": doc.size_bytes, "text": doc.text,
                 "attachments": len(doc.attachments), "created_at": now} for doc in chunk])
        hashes = [doc.content_hash for doc in chunk]
        found = session.execute(select(Document.content_hash, Document.id).where(
            _in(session, Document.content_hash, hashes, String)))
        ids.update(dict(found.all()))
        media = [{"document_id": ids[doc.content_hash], "position": position,
                  "kind": a.kind, "media_type": a.media_type, "filename": a.filename,
                  "width": a.width, "height": a.height, "pages": a.pages, "data": a.data}
                 for doc in chunk for position, a in enumerate(doc.attachments)]
        for row in media:  # one row a statement: each may be megabytes
            session.execute(_insert(session, AttachmentRow).values(row).on_conflict_do_nothing(
                index_elements=["document_id", "position"]))
    return ids


def attachments(session: Session, document_id: int) -> tuple[Attachment, ...]:
    """A document's images and scanned PDFs, in order."""
    rows = session.scalars(select(AttachmentRow).where(AttachmentRow.document_id == document_id)
                           .order_by(AttachmentRow.position))
    return tuple(Attachment(kind="image" if r.kind == "image" else "pdf",
                            media_type=r.media_type, filename=r.filename, data=r.data,
                            width=r.width, height=r.height, pages=r.pages) for r in rows)


class ScheduleBusy(Exception):
    """The schedule's previous run has not finished, so a new one may not start."""


def create_run(session: Session, *, pipeline: str, version: str, model: str, queue: str,
               budget_usd: Decimal | None = None, schedule: str | None = None,
               mode: str = RunMode.LIVE, deadline_at: datetime | None = None) -> Run:
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


def get_run(session: Session, run_id: int) -> Run | None:
    """The run with ``run_id``."""
    return session.get(Run, run_id)


def latest_run_id(session: Session) -> int | None:
    """The id of the most recent run."""
    return session.scalar(select(func.max(Run.id)))


def list_runs(session: Session, limit: int = 20) -> list[Run]:
    """The most recent runs, newest first."""
    return list(session.scalars(select(Run).order_by(Run.id.desc()).limit(limit)))


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
    if _postgres(session):
        rows = _unnest(_ITEM_ARRAYS)
        stmt = postgres_insert(_table(Item)).from_select(
            ["document_id", "source", "run_id", "chunk_index", "status", "created_at",
             "updated_at"],
            select(rows.c.document_id, rows.c.source, bindparam("run_id", type_=Integer),
                   literal(0), bindparam("status", type_=String),
                   bindparam("now", type_=_table(Item).c.created_at.type),
                   bindparam("now", type_=_table(Item).c.created_at.type)),
        ).on_conflict_do_nothing(index_elements=conflict).returning(_table(Item).c.id)
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
    """Record sources that could not be read as failed items: (source, code, message)."""
    now = utcnow()
    rows = [
        {"run_id": run_id, "document_id": None, "source": source, "chunk_index": 0,
         "status": ItemStatus.FAILED, "last_error_class": "document", "last_error_code": code,
         "last_error_message": message, "created_at": now, "updated_at": now, "finished_at": now}
        for source, code, message in failures
    ]
    if rows:
        session.execute(_insert(session, Item).values(rows))
    return len(rows)


def mark_queued(session: Session, item_ids: Sequence[int]) -> None:
    """Note that messages were sent for ``item_ids`` (only those still pending)."""
    now = utcnow()
    for start in range(0, len(item_ids), BATCH):
        session.execute(
            update(Item)
            .where(_in(session, Item.id, item_ids[start : start + BATCH], BigInteger),
                   Item.status == ItemStatus.PENDING)
            .values(status=ItemStatus.QUEUED, queued_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )


def start_run(session: Session, run_id: int) -> None:
    """Ingest is complete: record the total and let the run finish when its items do."""
    total = session.scalar(select(func.count()).where(Item.run_id == run_id)) or 0
    session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.INGESTING)
        .values(status=RunStatus.RUNNING, total_items=total)
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
    counts = _status_counts(session, run_id)
    session.execute(
        update(Run).where(Run.id == run_id)
        .values(succeeded_items=counts.get(ItemStatus.SUCCEEDED, 0),
                failed_items=counts.get(ItemStatus.FAILED, 0))
        .execution_options(synchronize_session=False))
    return True


@dataclass(frozen=True)
class DocumentState:
    """Where one document stands with one pipeline: what ``docpipe reprocess`` decides on."""

    document_id: int
    source: str
    created_at: datetime
    #: A finished item of the current version succeeded for it.
    current: bool
    #: An item of the pipeline is still open in a run that is not finished.
    busy: bool
    #: Some version succeeded for it (so, without ``current``: an older one).
    succeeded: bool
    failed: bool


def document_states(session: Session, *, pipeline: str, version: str,
                    since: datetime | None = None) -> Iterator[DocumentState]:
    """Every document (created at or after ``since``) with its standing for ``pipeline``.

    Only top-level items count: a plain document's item, or a long document's root.
    """
    def any_of(condition: Any) -> Any:
        return func.max(case((condition, 1), else_=0))

    per_document = (
        select(
            Item.document_id.label("document_id"),
            any_of(and_(Item.status == ItemStatus.SUCCEEDED,
                        Run.pipeline_version == version)).label("current"),
            any_of(and_(Item.status.not_in(ItemStatus.TERMINAL),
                        Run.status != RunStatus.FINISHED)).label("busy"),
            any_of(Item.status == ItemStatus.SUCCEEDED).label("succeeded"),
            any_of(Item.status == ItemStatus.FAILED).label("failed"),
        )
        .join(Run, Run.id == Item.run_id)
        .where(Run.pipeline == pipeline, Item.parent_id.is_(None),
               Item.document_id.is_not(None))
        .group_by(Item.document_id)
        .subquery()
    )
    query = (
        select(Document.id, Document.source, Document.created_at, per_document.c.current,
               per_document.c.busy, per_document.c.succeeded, per_document.c.failed)
        .outerjoin(per_document, per_document.c.document_id == Document.id)
        .order_by(Document.id)
    )
    if since is not None:
        query = query.where(Document.created_at >= since)
    for row in session.execute(query.execution_options(yield_per=BATCH)):
        yield DocumentState(row.id, row.source, row.created_at, bool(row.current),
                            bool(row.busy), bool(row.succeeded), bool(row.failed))


def document_texts(session: Session, document_ids: Sequence[int], *,
                   over_bytes: int | None = None) -> dict[int, str]:
    """The text of each given document; with ``over_bytes``, only of those longer in UTF-8.

    A text of at most ``max_input_tokens`` bytes fits in one call (a token is at least a
    byte), so a reprocess run reads only the texts that may need splitting.
    """
    texts: dict[int, str] = {}
    size = (func.octet_length(Document.text) if _postgres(session)
            else func.length(cast(Document.text, LargeBinary)))
    for start in range(0, len(document_ids), BATCH):
        chunk = document_ids[start : start + BATCH]
        query = select(Document.id, Document.text).where(
            _in(session, Document.id, chunk, BigInteger))
        if over_bytes is not None:
            query = query.where(size > over_bytes)
        texts.update((document_id, text) for document_id, text in session.execute(query))
    return texts


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


# -- claiming and completing items ------------------------------------------------------------


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


def claim_item(session: Session, item_id: int, *, lease_seconds: int, suspects: bool = True
               ) -> ClaimedItem | None:
    """Take the item under a lease if it is waiting and its run is active, else None.

    One conditional UPDATE: of two workers given the same item, exactly one gets it. With
    ``suspects=False`` an item whose worker was lost before (see :func:`suspected_losses`)
    is left alone.
    """
    now = utcnow()
    claimable = or_(
        Item.status.in_([ItemStatus.PENDING, ItemStatus.QUEUED]),
        and_(
            Item.status == ItemStatus.RETRY,
            or_(Item.not_before.is_(None), Item.not_before <= now + CLOCK_SKEW),
        ),
        and_(Item.status == ItemStatus.RUNNING, Item.lease_expires_at < now),
    )
    if not suspects:
        claimable = and_(claimable, Item.worker_losses == 0, Item.status != ItemStatus.RUNNING)
    # Batch runs are sent by the batch submitter, never by a worker (unless, to meet the
    # run's deadline, an item is sent live).
    run_active = (
        select(Run.id).where(Run.id == Item.run_id, Run.status.in_(RunStatus.ACTIVE),
                             or_(Run.mode != RunMode.BATCH, Item.send_live)).exists()
    )
    claimed = session.execute(
        update(Item)
        .where(Item.id == item_id, Item.document_id.is_not(None), claimable, run_active)
        .values(
            status=ItemStatus.RUNNING,
            attempts=Item.attempts + 1,
            worker_losses=Item.worker_losses
            + case((Item.status == ItemStatus.RUNNING, 1), else_=0),
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            not_before=None,
            updated_at=now,
        )
        .returning(Item.id)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    if claimed is None:
        return None
    item = _load_items(session, Item.id == item_id)[item_id]
    if item.worker_losses:
        # Only the lease holder calls, and every way a holder is lost counts a loss, so only
        # then can an attempt still be in flight: its holder's (or one that outlived its
        # lease, which overwrites this when it finishes after all).
        close_lost_attempts(session, item_id)
    return item


def claim_items(session: Session, item_ids: Sequence[int], *, lease_seconds: int
                ) -> dict[int, ClaimedItem]:
    """Take every waiting item of ``item_ids`` under a lease, in one conditional UPDATE.

    The group form of :func:`claim_item` with ``suspects=False``: items whose worker was lost
    before are left for :func:`claim_item` to take one at a time. Returns the claimed items by
    id; an id missing from the answer is done, held elsewhere, not due, paused or a suspect.
    """
    if not item_ids:
        return {}
    now = utcnow()
    claimable = and_(
        or_(Item.status.in_([ItemStatus.PENDING, ItemStatus.QUEUED]),
            and_(Item.status == ItemStatus.RETRY,
                 or_(Item.not_before.is_(None), Item.not_before <= now + CLOCK_SKEW))),
        Item.worker_losses == 0)
    run_active = (
        select(Run.id).where(Run.id == Item.run_id, Run.status.in_(RunStatus.ACTIVE),
                             or_(Run.mode != RunMode.BATCH, Item.send_live)).exists()
    )
    claimed = list(session.scalars(
        update(Item)
        .where(Item.id.in_(item_ids), Item.document_id.is_not(None), claimable, run_active)
        .values(status=ItemStatus.RUNNING, attempts=Item.attempts + 1,
                lease_expires_at=now + timedelta(seconds=lease_seconds), not_before=None,
                updated_at=now)
        .returning(Item.id)
        .execution_options(synchronize_session=False)))
    return _load_items(session, Item.id.in_(claimed)) if claimed else {}


def suspects_among(session: Session, item_ids: Sequence[int]) -> list[int]:
    """Which of ``item_ids`` are suspects: a worker was lost holding them (see below)."""
    if not item_ids:
        return []
    lost_now = and_(Item.status == ItemStatus.RUNNING, Item.lease_expires_at < utcnow())
    return list(session.scalars(
        select(Item.id).where(Item.id.in_(item_ids), or_(Item.worker_losses > 0, lost_now))
        .order_by(Item.id)))


def suspected_losses(session: Session, item_id: int) -> int:
    """How often workers were lost holding the item, counting a loss not yet claimed over."""
    lost_now = and_(Item.status == ItemStatus.RUNNING, Item.lease_expires_at < utcnow())
    return int(session.scalar(
        select(Item.worker_losses + case((lost_now, 1), else_=0)).where(Item.id == item_id)
    ) or 0)


def part_outputs(session: Session, item_id: int) -> list[dict[str, Any]]:
    """The results of a reduce item's parts, in document order."""
    return list(session.scalars(
        select(Result.output).join(Item, Item.result_id == Result.id)
        .where(Item.parent_id == item_id).order_by(Item.id)))


def unblock_parent(session: Session, parent_id: int) -> bool:
    """Queue a reduce item once every one of its parts has succeeded. Safe to race.

    Returns True for exactly one caller: the one that should send its message.
    """
    open_parts = (select(Item.id).where(Item.parent_id == parent_id,
                                        Item.status != ItemStatus.SUCCEEDED).exists())
    now = utcnow()
    result = session.execute(
        update(Item)
        .where(Item.id == parent_id, Item.status == ItemStatus.BLOCKED, ~open_parts)
        .values(status=ItemStatus.QUEUED, queued_at=now, updated_at=now)
        .execution_options(synchronize_session=False))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def fail_ancestors(session: Session, item_id: int, *, code: str, message: str) -> None:
    """Fail every reduce above a failed part: the whole document cannot be done."""
    parent_id = session.scalar(select(Item.parent_id).where(Item.id == item_id))
    while parent_id is not None:
        fail_item(session, parent_id, error_class="part_failed", code=code, message=message)
        parent_id = session.scalar(select(Item.parent_id).where(Item.id == parent_id))


def find_result_id(session: Session, content_hash: str, version: str, chunk: int) -> int | None:
    """The id of the result for (content, pipeline version, chunk), if one exists."""
    return session.scalar(
        select(Result.id).where(
            Result.content_hash == content_hash,
            Result.pipeline_version == version,
            Result.chunk_index == chunk,
        )
    )


#: Why an attempt is ``lost`` when its process left no reason of its own.
LOST_MESSAGE = ("the worker was lost during this call (killed, out of memory or past its time "
                "limit) before it recorded the answer: usage unknown, the API may have "
                "charged for it")


def begin_attempt(session: Session, *, item_id: int, run_id: int, model: str, worker: str,
                  reserve_usd: Decimal | None = None) -> int | None:
    """Record a call about to be made (``in_flight``); return the attempt's id.

    Written before the request, so a call whose process dies is still on record. With
    ``reserve_usd`` (a run with a budget), the call's worst-case cost is first held against
    the budget in one conditional update, so racing workers never overspend it together;
    None means the budget has no room for it and nothing was written.
    """
    if reserve_usd is not None:
        held = session.execute(
            update(Run)
            .where(Run.id == run_id, Run.budget_usd.is_not(None),
                   # Within the columns' precision: SQLite stores these as floats.
                   Run.spent_usd + Run.reserved_usd + reserve_usd
                   <= Run.budget_usd + MONEY_EPSILON)
            .values(reserved_usd=Run.reserved_usd + reserve_usd)
            .execution_options(synchronize_session=False))
        if not held.rowcount:  # type: ignore[attr-defined]
            return None
    return int(session.execute(
        _insert(session, Attempt).values(
            item_id=item_id, run_id=run_id, model=model, worker=worker,
            outcome=AttemptOutcome.IN_FLIGHT, started_at=utcnow(), latency_ms=0,
            reserved_usd=reserve_usd or Decimal(0),
        ).returning(Attempt.id)
    ).scalar_one())


@dataclass(frozen=True)
class NewAttempt:
    """A call about to be made, for :func:`begin_attempts`."""

    item_id: int
    run_id: int
    model: str


def begin_attempts(session: Session, calls: Sequence[NewAttempt], *, worker: str
                   ) -> list[int]:
    """Record calls about to be made (``in_flight``) in one INSERT; return their ids in order.

    The group form of :func:`begin_attempt` for calls that hold no budget.
    """
    if not calls:
        return []
    now = utcnow()
    rows = [{"item_id": c.item_id, "run_id": c.run_id, "model": c.model, "worker": worker,
             "outcome": AttemptOutcome.IN_FLIGHT, "started_at": now, "latency_ms": 0,
             "reserved_usd": Decimal(0)} for c in calls]
    inserted = session.execute(_insert(session, Attempt).values(rows)
                               .returning(Attempt.id, Attempt.item_id)).all()
    by_item = {item_id: attempt_id for attempt_id, item_id in inserted}
    return [int(by_item[c.item_id]) for c in calls]


def drop_attempt(session: Session, attempt_id: int) -> None:
    """Delete an ``in_flight`` row whose call was never sent (a 429 voided its slot first),
    releasing what it held against the budget: one attempt row per HTTP call."""
    dropped = session.execute(
        delete(Attempt).where(Attempt.id == attempt_id,
                              Attempt.outcome == AttemptOutcome.IN_FLIGHT)
        .returning(Attempt.run_id, Attempt.reserved_usd)
        .execution_options(synchronize_session=False)).first()
    if dropped is not None and dropped[1]:
        _move_to_spent(session, dropped[0], released=dropped[1], spent=Decimal(0))


def _move_to_spent(session: Session, run_id: int, *, released: Decimal, spent: Decimal) -> None:
    session.execute(
        update(Run).where(Run.id == run_id)
        .values(reserved_usd=Run.reserved_usd - released, spent_usd=Run.spent_usd + spent)
        .execution_options(synchronize_session=False))


def close_lost_attempts(session: Session, item_id: int, *, attempt_id: int | None = None,
                        code: str = "worker_lost", message: str = LOST_MESSAGE) -> int:
    """Mark the item's in-flight attempts (or just ``attempt_id``) lost; return how many."""
    stmt = update(Attempt).where(Attempt.item_id == item_id,
                                 Attempt.outcome == AttemptOutcome.IN_FLIGHT)
    if attempt_id is not None:
        stmt = stmt.where(Attempt.id == attempt_id)
    closed = session.execute(
        stmt.values(outcome=AttemptOutcome.LOST, error_code=code, error_message=message)
        .returning(Attempt.run_id, Attempt.reserved_usd)
        .execution_options(synchronize_session=False)).all()
    for run_id, reserved in closed:
        if reserved:
            # The API may have charged for it: count its worst case as spent.
            _move_to_spent(session, run_id, released=reserved, spent=reserved)
    if closed:
        _count_calls(session, item_id, calls=len(closed))
    return len(closed)


def _count_calls(session: Session, item_id: int, *, calls: int, cost: Decimal = Decimal(0)
                 ) -> None:
    """Add finished attempt rows and their cost to the item's own tally (``Item.calls``)."""
    session.execute(update(Item).where(Item.id == item_id)
                    .values(calls=Item.calls + calls, cost_usd=Item.cost_usd + cost)
                    .execution_options(synchronize_session=False))


def last_lost_attempt(session: Session, item_id: int) -> tuple[str, str] | None:
    """(code, message) of the item's most recent lost call, if any."""
    row = session.execute(
        select(Attempt.error_code, Attempt.error_message)
        .where(Attempt.item_id == item_id, Attempt.outcome == AttemptOutcome.LOST)
        .order_by(Attempt.id.desc()).limit(1)).first()
    return (row[0] or "", row[1] or "") if row is not None else None


def hashes_with_results(session: Session, hashes: Sequence[str], version: str) -> set[str]:
    """Which of ``hashes`` already have a result for pipeline ``version``."""
    found: set[str] = set()
    for start in range(0, len(hashes), BATCH):
        found.update(session.scalars(select(Result.content_hash).where(
            Result.content_hash.in_(hashes[start : start + BATCH]),
            Result.pipeline_version == version, Result.chunk_index == 0)))
    return found


def output_tokens_seen(session: Session, version: str) -> tuple[float, int]:
    """Mean output tokens of successful calls made for pipeline ``version``, and how many."""
    mean, count = session.execute(
        select(func.avg(Attempt.output_tokens), func.count(Attempt.id))
        .join(Run, Run.id == Attempt.run_id)
        .where(Run.pipeline_version == version, Attempt.outcome == AttemptOutcome.OK)).one()
    return float(mean or 0), int(count)


@dataclass(frozen=True)
class AttemptRecord:
    """One HTTP call, as stored in ``attempts``."""

    item_id: int
    run_id: int
    model: str
    outcome: str
    started_at: datetime
    latency_ms: int
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    request_id: str | None = None
    response_id: str | None = None
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal = field(default_factory=Decimal)
    worker: str | None = None
    #: What :func:`begin_attempt` held against the run's budget for this call.
    reserved_usd: Decimal = field(default_factory=Decimal)
    #: The ``in_flight`` row from :func:`begin_attempt` to complete; None: a new row.
    id: int | None = None


def record_attempt(session: Session, attempt: AttemptRecord) -> None:
    """Store one call's outcome and usage, completing its in-flight row if it has one."""
    values = {k: v for k, v in vars(attempt).items() if k != "id"}
    if attempt.id is None:
        session.execute(_insert(session, Attempt).values(values))
        _count_calls(session, attempt.item_id, calls=1, cost=attempt.cost_usd)
        return
    completed = session.execute(
        update(Attempt).where(Attempt.id == attempt.id,
                              Attempt.outcome == AttemptOutcome.IN_FLIGHT)
        .values(values).execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
    if not completed:  # closed as lost meanwhile (its lease ran out): the answer came after all
        session.execute(update(Attempt).where(Attempt.id == attempt.id).values(values)
                        .execution_options(synchronize_session=False))
    # A row closed as lost was counted then; its cost arrives only now.
    _count_calls(session, attempt.item_id, calls=1 if completed else 0, cost=attempt.cost_usd)
    if attempt.reserved_usd:
        # The reservation becomes the real cost. If the call was closed as lost, its worst
        # case was already counted as spent: replace that with the real cost.
        _move_to_spent(session, attempt.run_id,
                       released=attempt.reserved_usd if completed else Decimal(0),
                       spent=attempt.cost_usd - (Decimal(0) if completed
                                                 else attempt.reserved_usd))


def count_attempts(session: Session, item_id: int, *, outcome: str | None = None) -> int:
    """How many calls were made for an item (with ``outcome``, if given)."""
    stmt = select(func.count()).select_from(Attempt).where(Attempt.item_id == item_id)
    if outcome is not None:
        stmt = stmt.where(Attempt.outcome == outcome)
    return int(session.scalar(stmt) or 0)


def save_result(
    session: Session,
    item: ClaimedItem,
    *,
    output: dict[str, Any],
    model: str,
    response_id: str | None,
) -> int:
    """Store the item's result (or find the one a racing worker stored) and complete it."""
    session.execute(
        _insert(session, Result)
        .values(
            content_hash=item.content_hash, pipeline_version=item.pipeline_version,
            chunk_index=item.chunk_index, pipeline=item.pipeline, document_id=item.document_id,
            item_id=item.id, output=output, model=model, response_id=response_id,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["content_hash", "pipeline_version", "chunk_index"])
    )
    result_id = find_result_id(session, item.content_hash, item.pipeline_version, item.chunk_index)
    assert result_id is not None  # inserted above or by the racing writer
    _complete(session, item.id, result_id, reused=False)
    return result_id


@dataclass(frozen=True)
class Success:
    """An answered call whose decision is success, for :func:`record_successes`."""

    item: ClaimedItem
    attempt: AttemptRecord
    output: dict[str, Any]
    response_id: str | None
    waited_ms: int = 0


def record_successes(session: Session, successes: Sequence[Success]) -> dict[int, int]:
    """The group form of :func:`record_attempt` then :func:`save_result`, for answers that
    succeeded: their attempt rows completed, their results stored (or the racing writer's
    found) and their items completed with their tallies, in a few statements however many
    there are. Returns each item's result id.
    """
    if not successes:
        return {}
    # 1. Complete the in-flight rows in one executemany. A row closed as lost meanwhile (its
    #    lease ran out) takes the one-row path, which knows how to count it; the rows are
    #    locked first (SQLite: the transaction holds the write lock from its BEGIN).
    ids = [s.attempt.id for s in successes if s.attempt.id is not None]
    still = set(session.scalars(
        select(Attempt.id).where(_in(session, Attempt.id, ids, BigInteger),
                                 Attempt.outcome == AttemptOutcome.IN_FLIGHT)
        .with_for_update())) if ids else set()
    fast = [s for s in successes if s.attempt.id in still]
    for s in successes:
        if s.attempt.id not in still:
            record_attempt(session, s.attempt)
    if fast:
        attempts = _table(Attempt)
        columns = [k for k in vars(fast[0].attempt) if k != "id"]
        session.connection().execute(
            update(attempts).where(attempts.c.id == bindparam("_id"))
            .values({k: bindparam(f"_{k}") for k in columns}),
            [{"_id": s.attempt.id, **{f"_{k}": getattr(s.attempt, k) for k in columns}}
             for s in fast])
        held: dict[int, tuple[Decimal, Decimal]] = {}
        for s in fast:
            if s.attempt.reserved_usd:
                released, spent = held.get(s.attempt.run_id, (Decimal(0), Decimal(0)))
                held[s.attempt.run_id] = (released + s.attempt.reserved_usd,
                                          spent + s.attempt.cost_usd)
        for run_id, (released, spent) in held.items():
            _move_to_spent(session, run_id, released=released, spent=spent)
    counted = {s.item.id for s in fast}

    # 2. The results in one INSERT; the keys a racing writer stored first are looked up.
    now = utcnow()
    key_of = {(s.item.content_hash, s.item.pipeline_version, s.item.chunk_index): s
              for s in successes}
    inserted = session.execute(
        _insert(session, Result)
        .values([{"content_hash": s.item.content_hash,
                  "pipeline_version": s.item.pipeline_version,
                  "chunk_index": s.item.chunk_index, "pipeline": s.item.pipeline,
                  "document_id": s.item.document_id, "item_id": s.item.id,
                  "output": s.output, "model": s.attempt.model,
                  "response_id": s.response_id, "created_at": now}
                 for s in key_of.values()])
        .on_conflict_do_nothing(index_elements=["content_hash", "pipeline_version",
                                                "chunk_index"])
        .returning(Result.id, Result.content_hash, Result.pipeline_version,
                   Result.chunk_index)).all()
    result_of = {(h, v, c): rid for rid, h, v, c in inserted}
    for key in key_of.keys() - result_of.keys():
        found = find_result_id(session, *key)
        assert found is not None  # the racing writer's
        result_of[key] = found
    result_ids = {s.item.id: result_of[(s.item.content_hash, s.item.pipeline_version,
                                        s.item.chunk_index)] for s in successes}

    # 3. Complete the items, adding each call (unless counted above one by one) and its wait.
    items = _table(Item)
    session.connection().execute(
        update(items).where(items.c.id == bindparam("_id")).values(
            status=ItemStatus.SUCCEEDED, result_id=bindparam("_result"), reused=False,
            lease_expires_at=None, not_before=None, finished_at=now, updated_at=now,
            last_error_class=None, last_error_code=None, last_error_message=None,
            calls=items.c.calls + bindparam("_calls"),
            cost_usd=items.c.cost_usd + bindparam("_cost"),
            budget_wait_ms=items.c.budget_wait_ms + bindparam("_waited")),
        [{"_id": s.item.id, "_result": result_ids[s.item.id],
          "_calls": 1 if s.item.id in counted else 0,
          "_cost": s.attempt.cost_usd if s.item.id in counted else Decimal(0),
          "_waited": s.waited_ms} for s in successes])
    return result_ids


def reuse_result(session: Session, item_id: int, result_id: int) -> None:
    """Complete an item with a result that already existed; no call was made."""
    _complete(session, item_id, result_id, reused=True)


def _complete(session: Session, item_id: int, result_id: int, *, reused: bool) -> None:
    now = utcnow()
    session.execute(
        update(Item)
        .where(Item.id == item_id)
        .values(
            status=ItemStatus.SUCCEEDED, result_id=result_id, reused=reused,
            lease_expires_at=None, not_before=None, finished_at=now, updated_at=now,
            last_error_class=None, last_error_code=None, last_error_message=None,
        )
        .execution_options(synchronize_session=False)
    )


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
        .where(Item.id == item_id)
        .values(
            status=ItemStatus.RETRY, not_before=not_before, lease_expires_at=None,
            queued_at=now if message_sent else None,
            last_error_class=error_class, last_error_code=code, last_error_message=message,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )


def fail_item(session: Session, item_id: int, *, error_class: str, code: str, message: str) -> None:
    """Fail the item with its error; ``docpipe replay`` can bring it back."""
    now = utcnow()
    session.execute(
        update(Item)
        .where(Item.id == item_id)
        .values(
            status=ItemStatus.FAILED, lease_expires_at=None, not_before=None, finished_at=now,
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
    values: dict[str, Any] = (
        {"status": ItemStatus.RETRY, "not_before": retry_at, "queued_at": None}
        if retry_at is not None else
        {"status": ItemStatus.FAILED, "not_before": None, "finished_at": now})
    result = session.execute(
        update(Item)
        .where(Item.id == item_id, Item.status == ItemStatus.RUNNING)
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
        .where(Item.id == item_id)
        .values(
            status=ItemStatus.RETRY, not_before=not_before, lease_expires_at=None,
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
        .where(Item.id == item_id)
        .values(
            status=ItemStatus.PENDING, attempts=Item.attempts - 1, lease_expires_at=None,
            last_error_class=error_class, last_error_code=code, last_error_message=message,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )


# -- replay, resume, reconcile ----------------------------------------------------------------


def replay_items(session: Session, run_id: int, statuses: Sequence[str]) -> list[int]:
    """Reset the run's items in ``statuses`` to pending and reopen the run.

    Items without a document (unreadable sources) stay failed: nothing to call the API with.
    Each item is reset by one caller only, so concurrent replays do not double the work.
    """
    now = utcnow()
    ids = list(
        session.scalars(
            update(Item)
            .where(Item.run_id == run_id, Item.status.in_(statuses),
                   Item.document_id.is_not(None))
            .values(
                status=ItemStatus.PENDING, attempts=0, lease_expires_at=None, not_before=None,
                finished_at=None, last_error_class=None, last_error_code=None,
                last_error_message=None, updated_at=now,
            )
            .returning(Item.id)
            .execution_options(synchronize_session=False)
        )
    )
    if ids:
        session.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(status=RunStatus.RUNNING, status_reason=None, finished_at=None)
        )
    return ids


def resume_run(session: Session, run_id: int, *, budget_usd: Decimal | None = None) -> None:
    """Reopen a paused run so its items can be claimed again, with a new budget if given."""
    if budget_usd is not None:
        session.execute(update(Run).where(Run.id == run_id).values(budget_usd=budget_usd))
    session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.PAUSED)
        .values(status=RunStatus.RUNNING, status_reason=None)
    )


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
            .where(Item.id.in_(item_ids[start : start + BATCH]))
            .values(status=ItemStatus.QUEUED, queued_at=now, updated_at=now,
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
                   Item.status.in_([ItemStatus.PENDING, ItemStatus.QUEUED]))
            .values(status=ItemStatus.QUEUED, queued_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )


# -- reporting --------------------------------------------------------------------------------


def _status_counts(session: Session, run_id: int) -> dict[str, int]:
    rows = session.execute(
        select(Item.status, func.count()).where(Item.run_id == run_id).group_by(Item.status)
    )
    return dict(rows.all())


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
    reused = waited_ms = 0
    for status, count, reused_here, waited_here in session.execute(
        select(Item.status, func.count(), func.count().filter(Item.reused.is_(True)),
               func.coalesce(func.sum(Item.budget_wait_ms), 0))
        .where(Item.run_id == run_id).group_by(Item.status)
    ):
        by_status[status] = count
        reused += int(reused_here)
        waited_ms += int(waited_here)
    recent = Attempt.started_at >= utcnow() - timedelta(minutes=1)
    by_outcome: dict[str, int] = {}
    # input, cached, output and reasoning tokens; calls and tokens in the last minute
    tokens = [0, 0, 0, 0]
    recent_calls = recent_tokens = 0
    cost = Decimal(0)
    for outcome, count, *token_sums, cost_here, recent_here, recent_tokens_here in session.execute(
        select(
            Attempt.outcome, func.count(),
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
        total=total, by_status=by_status, reused=reused,
        attempts=sum(by_outcome.values()), rate_limited=by_outcome.get("rate_limited", 0),
        input_tokens=tokens[0], cached_tokens=tokens[1], output_tokens=tokens[2],
        reasoning_tokens=tokens[3], cost_usd=cost,
        errors={f"{cls}:{code}": n for cls, code, n in errors},
    )


def _cost_per_item(session: Session, run_id: int) -> tuple[int, dict[str, float]]:
    """How many items made calls, and the p50, p90 and max of what each cost."""
    called = and_(Item.run_id == run_id, Item.calls > 0)
    if _postgres(session):
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


def iter_item_results(session: Session, run_id: int) -> Iterator[ItemResult]:
    """Every document of the run with its output or error, in item order, streamed.

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
    for row in session.execute(stmt):
        yield ItemResult(*row)


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


# -- the Batch API ----------------------------------------------------------------------------

#: Item states a batch run's item is sent from: never sent, unblocked (a reduce), or due again.
_BATCHABLE = (ItemStatus.PENDING, ItemStatus.QUEUED, ItemStatus.RETRY)


def batchable_items(session: Session, *, limit: int) -> dict[int, list[int]]:
    """Items of active batch runs waiting to be sent, by run (oldest first)."""
    now = utcnow()
    stmt = (
        select(Item.run_id, Item.id)
        .join(Run, Run.id == Item.run_id)
        .where(Run.mode == RunMode.BATCH, Run.status.in_(RunStatus.ACTIVE),
               Item.document_id.is_not(None), Item.status.in_(_BATCHABLE), ~Item.send_live,
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
    moved = list(session.scalars(
        update(Item)
        .where(Item.id.in_(item_ids), Item.status.in_(_BATCHABLE))
        .values(status=ItemStatus.BATCHED, batch_id=batch.id, attempts=Item.attempts + 1,
                not_before=None, updated_at=utcnow())
        .returning(Item.id)
        .execution_options(synchronize_session=False)))
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
    session.execute(update(Item).where(Item.batch_id == batch_id,
                                       Item.status == ItemStatus.BATCHED)
                    .values(status=ItemStatus.PENDING, batch_id=None,
                            attempts=Item.attempts - 1, updated_at=utcnow()))
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


def batched_items(session: Session, batch_id: int) -> dict[int, ClaimedItem]:
    """The items still waiting in a batch, with what saving their results needs."""
    return _load_items(session, and_(Item.batch_id == batch_id,
                                     Item.status == ItemStatus.BATCHED))


def items_by_id(session: Session, item_ids: Sequence[int]) -> dict[int, ClaimedItem]:
    """Items with what building their requests needs (text, media, place in the tree)."""
    return _load_items(session, Item.id.in_(item_ids))


def _load_items(session: Session, condition: Any) -> dict[int, ClaimedItem]:
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


def return_to_batching(session: Session, item_id: int, *, error_class: str, code: str,
                       message: str) -> None:
    """A line that failed in a way worth another try: the item waits for the next batch."""
    session.execute(update(Item).where(Item.id == item_id, Item.status == ItemStatus.BATCHED)
                    .values(status=ItemStatus.PENDING, batch_id=None,
                            last_error_class=error_class, last_error_code=code,
                            last_error_message=message, updated_at=utcnow()))


def send_live(session: Session, item_id: int, *, error_class: str, code: str, message: str
              ) -> bool:
    """Hand a batch run's item to the workers: a new batch could miss the run's deadline.

    True when the item moved (the caller then sends its message).
    """
    moved = session.execute(
        update(Item).where(Item.id == item_id, Item.status.in_(
            [ItemStatus.BATCHED, *_BATCHABLE]))
        .values(status=ItemStatus.QUEUED, batch_id=None, send_live=True, queued_at=utcnow(),
                last_error_class=error_class, last_error_code=code,
                last_error_message=message, updated_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
    return bool(moved)


def batch_ingested(session: Session, batch_id: int) -> None:
    """Every line of the batch is in the database."""
    session.execute(update(BatchRow).where(BatchRow.id == batch_id).values(
        status=BatchStatus.INGESTED, finished_at=utcnow()))


def run_batches(session: Session, run_id: int) -> list[BatchRow]:
    """A run's batches, oldest first."""
    return list(session.scalars(select(BatchRow).where(BatchRow.run_id == run_id)
                                .order_by(BatchRow.id)))


def cancel_run(session: Session, run_id: int) -> list[str]:
    """Stop a run: it pauses as ``cancelled``, and items not yet sent fail as ``cancelled``.

    Items in flight (a live call, a batch at the provider) finish as they end: their answers
    are paid for, so they are kept. Returns the provider ids of the run's open batches, to
    cancel there.
    """
    now = utcnow()
    session.execute(update(Run).where(Run.id == run_id, Run.status != RunStatus.FINISHED)
                    .values(status=RunStatus.PAUSED, status_reason=CANCELLED_REASON))
    session.execute(
        update(Item)
        .where(Item.run_id == run_id, Item.status.in_(
            [ItemStatus.PENDING, ItemStatus.QUEUED, ItemStatus.RETRY, ItemStatus.BLOCKED]))
        .values(status=ItemStatus.FAILED, last_error_class="cancelled", last_error_code="cancelled",
                last_error_message="the run was cancelled", finished_at=now, updated_at=now)
        .execution_options(synchronize_session=False))
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
    counts = _status_counts(session, run_id)
    result = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.PAUSED,
               Run.status_reason == CANCELLED_REASON, ~open_items)
        .values(status=RunStatus.FINISHED, finished_at=utcnow(),
                succeeded_items=counts.get(ItemStatus.SUCCEEDED, 0),
                failed_items=counts.get(ItemStatus.FAILED, 0))
        .execution_options(synchronize_session=False))
    return bool(result.rowcount)  # type: ignore[attr-defined]
