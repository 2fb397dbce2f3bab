"""Documents and their attachments: stored once per content, looked up by hash."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    LargeBinary,
    String,
    and_,
    bindparam,
    case,
    cast,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import Insert as PostgresInsert
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from pipelines.media import Attachment
from workers.db.dialect import (
    BATCH,
    DOCUMENT_ARRAYS,
    any_in,
    insert_for,
    is_postgres,
    table_of,
    unnest,
)
from workers.db.models import Attachment as AttachmentRow
from workers.db.models import (
    Document,
    Item,
    ItemStatus,
    Run,
    RunStatus,
    utcnow,
)


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
    postgres = is_postgres(session)
    insert_new: PostgresInsert | SqliteInsert
    if postgres:
        # One statement whatever the batch: a row per index of one array per column.
        rows = unnest(DOCUMENT_ARRAYS)
        # On the table, not the mapped class: a Core statement, which the ORM's bulk insert
        # would otherwise take its parameters for rows.
        insert_new = postgres_insert(table_of(Document)).from_select(
            [*(name for name, _ in DOCUMENT_ARRAYS), "created_at"],
            select(*rows.c, bindparam("now", type_=table_of(Document).c.created_at.type)),
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
            any_in(session, Document.content_hash, hashes, String)))
        ids.update(dict(found.all()))
        media = [{"document_id": ids[doc.content_hash], "position": position,
                  "kind": a.kind, "media_type": a.media_type, "filename": a.filename,
                  "width": a.width, "height": a.height, "pages": a.pages, "data": a.data}
                 for doc in chunk for position, a in enumerate(doc.attachments)]
        for row in media:  # one row a statement: each may be megabytes
            session.execute(insert_for(session, AttachmentRow).values(row).on_conflict_do_nothing(
                index_elements=["document_id", "position"]))
    return ids


def attachments(session: Session, document_id: int) -> tuple[Attachment, ...]:
    """A document's images and scanned PDFs, in order."""
    rows = session.scalars(select(AttachmentRow).where(AttachmentRow.document_id == document_id)
                           .order_by(AttachmentRow.position))
    return tuple(Attachment(kind="image" if r.kind == "image" else "pdf",
                            media_type=r.media_type, filename=r.filename, data=r.data,
                            width=r.width, height=r.height, pages=r.pages) for r in rows)


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
    size = (func.octet_length(Document.text) if is_postgres(session)
            else func.length(cast(Document.text, LargeBinary)))
    for start in range(0, len(document_ids), BATCH):
        chunk = document_ids[start : start + BATCH]
        query = select(Document.id, Document.text).where(
            any_in(session, Document.id, chunk, BigInteger))
        if over_bytes is not None:
            query = query.where(size > over_bytes)
        texts.update((document_id, text) for document_id, text in session.execute(query))
    return texts
