"""Ingest: turn paths into documents and items, write them, then enqueue their ids.

Every item is committed before its message is sent (the broker never knows about work the
database does not), and sources are streamed in batches so memory does not grow with the
size of the folder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from pipelines import DocumentError, Pipeline
from pipelines.chunking import Node, plan
from pipelines.documents import (
    DEFAULT_READING,
    Reading,
    SourceDocument,
    discover,
    read_source,
    unmatched,
)
from workers.db import repository as repo
from workers.db.session import session_scope
from workers.errors import IngestCutOff, NoSuchInput
from workers.llm.pricing import price_table
from workers.settings import Settings

log = logging.getLogger("docpipe.ingest")

Publisher = Callable[..., None]
#: Sources written and published per batch.
BATCH_SIZE = 500
#: The first batch: small, so workers start calling while the rest is read.
FIRST_BATCH_SIZE = 32


@dataclass
class IngestReport:
    """What ``docpipe ingest`` did."""

    run_id: int
    items: int = 0
    duplicates: int = 0
    unreadable: int = 0
    #: Documents split into chunks and reduces (counted in ``items`` once each).
    long_documents: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"run_id": self.run_id, "items": self.items, "duplicates": self.duplicates,
                "unreadable": self.unreadable, "long_documents": self.long_documents}


def ingest(
    paths: Iterable[str], pipeline: Pipeline, *, settings: Settings, publish: Publisher,
    queue: str, budget_usd: Decimal | None = None, mode: str = "live",
    deadline_at: datetime | None = None,
) -> IngestReport:
    """Create a run of ``pipeline`` over ``paths`` and enqueue its items on ``queue``.

    With ``budget_usd`` the run pauses before a call that could take its spend past it. The
    run keeps its paths: if this is cut off (a service down, Ctrl-C, a kill), ``docpipe
    resume`` reads them again (:func:`finish_ingest`).

    Raises:
        NoSuchInput: a path matches no file (no run is created).
        ConfigurationError: a budget on a model docpipe has no price for (no run either).
        IngestCutOff: from what stopped it, once the run exists.
    """
    paths = list(paths)
    check_inputs(paths)
    if budget_usd is not None:
        price_table(settings).require(pipeline.model)
    with session_scope() as session:
        run = repo.create_run(session, pipeline=pipeline.name, version=pipeline.version,
                              model=pipeline.model, queue=queue, budget_usd=budget_usd,
                              mode=mode, deadline_at=deadline_at,
                              sources={"paths": paths, "cwd": os.getcwd()})
        run_id = run.id
    try:
        return finish_ingest(run_id, paths, pipeline, settings=settings, publish=publish,
                             queue=queue, mode=mode)
    except KeyboardInterrupt as exc:
        raise IngestCutOff(run_id, interrupted=True) from exc
    except Exception as exc:
        raise IngestCutOff(run_id, interrupted=_by_ctrl_c(exc)) from exc


def _by_ctrl_c(error: BaseException) -> bool:
    """Whether Ctrl-C is behind ``error``: a KeyboardInterrupt that landed mid-query can be
    replaced, as it unwinds, by the driver's error from cleaning the connection up."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        todo += [current.__cause__, current.__context__]
    return False


def finish_ingest(run_id: int, paths: Iterable[str], pipeline: Pipeline, *,
                  settings: Settings, publish: Publisher, queue: str, mode: str = "live"
                  ) -> IngestReport:
    """Read ``paths`` into run ``run_id``, write what it does not have yet, and start it.

    Safe to repeat: a document already in the run, or a source already failed in it, is
    skipped (counted as a duplicate), so an ingest that was cut off finishes where it
    stopped, and its items already written are sent by the reconciler.
    """
    report = IngestReport(run_id=run_id)
    documents: list[SourceDocument] = []
    failures: list[DocumentError] = []

    def flush() -> None:
        _write_batch(report, documents, failures, pipeline=pipeline, publish=publish,
                     queue=queue)
        documents.clear()
        failures.clear()

    if mode == "batch":  # beat sends batch runs; a worker never takes their items
        publish = _hold
    batch = FIRST_BATCH_SIZE
    for read in read_paths(paths, settings, reading=pipeline.reading):
        if isinstance(read, DocumentError):
            failures.append(read)
        else:
            documents.append(read)
        if len(documents) + len(failures) >= batch:
            flush()
            batch = min(2 * batch, BATCH_SIZE)
    flush()

    with session_scope() as session:
        repo.start_run(session, report.run_id)
    # After start_run commits (see workers.items.processing._finish_run_if_done for why).
    with session_scope() as session:
        repo.finish_run_if_done(session, report.run_id)
    return report


def check_inputs(paths: Sequence[str]) -> None:
    """Refuse paths that match no file, before anything is created or paid for.

    Raises:
        NoSuchInput: naming each such path.
    """
    if missing := unmatched(paths):
        raise NoSuchInput(missing)


def _hold(item_ids: Sequence[int], *, queue: str) -> None:
    """The publisher of a batch run: its items stay ``pending`` for the batch submitter."""


def read_paths(paths: Iterable[str], settings: Settings, *, reading: Reading = DEFAULT_READING
               ) -> Iterator[SourceDocument | DocumentError]:
    """Every document under ``paths``, or the reason a source could not be read."""
    for found in discover(paths):
        if isinstance(found, DocumentError):
            yield found
            continue
        try:
            yield from read_source(found, text_field=settings.json_text_field,
                                   max_bytes=settings.max_file_bytes, reading=reading)
        except Exception as exc:  # a parser bug must not stop the rest of the run
            log.exception("reading %s failed", found)
            yield DocumentError(str(found), f"{exc.__class__.__name__}: {exc}",
                                code="unreadable")


def _write_batch(report: IngestReport, documents: Sequence[SourceDocument],
                 failures: Sequence[DocumentError], *, pipeline: Pipeline, publish: Publisher,
                 queue: str) -> None:
    if not documents and not failures:
        return
    with session_scope() as session:
        ids = repo.upsert_documents(session, [
            repo.NewDocument(content_hash=d.content_hash, source=d.source,
                             media_type=d.media_type, size_bytes=d.size_bytes, text=d.text,
                             attachments=d.attachments)
            for d in documents
        ])
        created, added, long_documents = add_run_items(
            session, report.run_id,
            [(ids[d.content_hash], d.source, d.text) for d in documents], pipeline)
        if added < len(documents):  # some documents the run already had: duplicates
            report.duplicates += repo.add_duplicates(
                session, report.run_id, [(ids[d.content_hash], d.source) for d in documents])
        report.long_documents += long_documents
        report.unreadable += repo.add_failed_items(
            session, report.run_id, [(f.source, f.code, f.reason) for f in failures]
        )
    report.items += added
    if created and publish is not _hold:
        publish(created, queue=queue)
        with session_scope() as session:
            repo.mark_queued(session, created)


def add_run_items(session: Session, run_id: int, documents: Sequence[tuple[int, str, str]],
                  pipeline: Pipeline) -> tuple[list[int], int, int]:
    """Items for (document id, source, text) in a run: one, or a long document's tree.

    A document already in the run gets nothing. Returns the ids of the items to send, how
    many documents got items, and how many of those are long documents.
    """
    plans: dict[int, list[Node] | None] = {}
    for document_id, _, text in documents:
        if document_id not in plans:
            plans[document_id] = plan_document(text, pipeline)
    created = repo.add_items(session, run_id, [(doc, source) for doc, source, _ in documents
                                               if plans[doc] is None])
    added, long_documents = len(created), 0
    for document_id, source, _ in documents:
        nodes = plans.pop(document_id, None)  # once per document in the batch
        if nodes is not None:
            leaves = repo.add_item_tree(session, run_id, document_id, source, nodes)
            if leaves:
                added += 1
                long_documents += 1
                created.extend(leaves)
    return created, added, long_documents


def plan_document(text: str, pipeline: Pipeline) -> list[Node] | None:
    """The chunk-and-reduce tree of a document too long for one call, else None."""
    if pipeline.max_input_tokens is None:
        return None
    return plan(text, max_tokens=pipeline.max_input_tokens, overlap=pipeline.chunk_overlap,
                fan_in=pipeline.reduce_fan_in)
