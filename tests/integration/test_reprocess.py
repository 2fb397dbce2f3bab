"""Reprocessing picks exactly the documents a version lacks; a schedule never overlaps itself."""

from __future__ import annotations

import dataclasses
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from pipelines import SUMMARISE, Pipeline
from pipelines.documents import content_hash
from workers.db import repository as repo
from workers.db.models import Document, Item, ItemStatus, Run, RunStatus, utcnow
from workers.db.session import session_scope
from workers.errors import ScheduleBusy
from workers.runs.reprocess import reprocess

V1 = dataclasses.replace(SUMMARISE, instructions="Summarise the document (first wording).")
V2 = dataclasses.replace(SUMMARISE, instructions="Summarise the document (second wording).")


class Sent:
    """A publisher that records what it was given: the broker is not under test here."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.queues: set[str] = set()

    def __call__(self, ids: list[int], *, queue: str) -> None:
        self.ids.extend(ids)
        self.queues.add(queue)


def run_of(pipeline: Pipeline, sources: dict[str, str], outcome: dict[str, str],
           *, finish: bool = True) -> int:
    """A run of ``pipeline`` over {source: text} whose items end as ``outcome[source]``."""
    with session_scope() as s:
        run = repo.create_run(s, pipeline=pipeline.name, version=pipeline.version,
                              model=pipeline.model, queue="docpipe.live")
        docs = [repo.NewDocument(content_hash(t), src, "text/plain", len(t), t)
                for src, t in sources.items()]
        ids = repo.upsert_documents(s, docs)
        repo.add_items(s, run.id, [(ids[d.content_hash], d.source) for d in docs])
        repo.start_run(s, run.id)
        for item in s.scalars(select(Item).where(Item.run_id == run.id)):
            fate = outcome[item.source]
            if fate == "succeeded":
                claimed = repo.claim_item(s, item.id, lease_seconds=60, holder="test")
                assert claimed is not None
                repo.save_result(s, claimed, output={"n": item.id}, model="m",
                                 response_id=None)
            elif fate == "failed":
                repo.fail_item(s, item.id, error_class="failed", code="x", message="x")
        if finish:
            repo.finish_run_if_done(s, run.id)
        return run.id


@pytest.fixture
def corpus(migrated_db: str) -> dict[str, str]:
    """Six documents, each in a different standing with ``summarise``."""
    texts = {name: f"Memo {name}: the {name} document." for name in
             ("old", "current", "broken", "new", "busy", "mixed")}
    run_of(V1, {"old": texts["old"], "mixed": texts["mixed"]},
           {"old": "succeeded", "mixed": "succeeded"})
    run_of(V2, {"current": texts["current"], "broken": texts["broken"]},
           {"current": "succeeded", "broken": "failed"})
    run_of(V2, {"mixed": texts["mixed"]}, {"mixed": "failed"})  # v1 ok, v2 failed: outdated
    run_of(V2, {"busy": texts["busy"]}, {"busy": "queued"}, finish=False)
    with session_scope() as s:  # stored by an ingest of another pipeline: never summarised
        repo.upsert_documents(s, [repo.NewDocument(content_hash(texts["new"]), "new",
                                                   "text/plain", 9, texts["new"])])
    return texts


def selected_sources(sent: Sent) -> set[str]:
    with session_scope() as s:
        return set(s.scalars(select(Item.source).where(Item.id.in_(sent.ids))))


def test_each_document_is_taken_or_skipped_for_its_reason(corpus: dict[str, str]) -> None:
    sent = Sent()
    report = reprocess(V2, publish=sent, queue="docpipe.nightly")
    assert dict(report.selected) == {"outdated": 2, "failed": 1, "missing": 1}
    assert dict(report.skipped) == {"current": 1, "in_progress": 1}
    assert selected_sources(sent) == {"old", "mixed", "broken", "new"}
    assert sent.queues == {"docpipe.nightly"} and report.items == 4
    with session_scope() as s:
        run = s.get(Run, report.run_id)
        assert run is not None and run.pipeline_version == V2.version
        assert run.status == RunStatus.RUNNING and run.total_items == 4


@pytest.mark.parametrize(("only", "expected"), [
    (("outdated",), {"old", "mixed"}),
    (("failed",), {"broken"}),
    (("missing",), {"new"}),
    (("missing", "failed"), {"new", "broken"}),
])
def test_only_takes_exactly_that_class(corpus: dict[str, str], only: tuple[Any, ...],
                                       expected: set[str]) -> None:
    sent = Sent()
    report = reprocess(V2, publish=sent, queue="q", only=only)
    assert selected_sources(sent) == expected
    others = {"outdated", "failed", "missing"} - set(only)
    assert {k.removesuffix("_not_selected") for k in report.skipped
            if k.endswith("_not_selected")} <= others


def test_where_and_since_narrow_the_set(corpus: dict[str, str]) -> None:
    sent = Sent()
    report = reprocess(V2, publish=sent, queue="q", where="[bm]*")
    assert selected_sources(sent) == {"broken", "mixed"}
    assert report.skipped["not_matching_where"] == 3  # old, current, new; busy is in progress

    with session_scope() as s:
        s.execute(update(Document).values(created_at=utcnow() - timedelta(days=10)))
        s.execute(update(Document).where(Document.source == "old")
                  .values(created_at=utcnow()))
    later = Sent()
    reprocess(V2, publish=later, queue="q", since=utcnow() - timedelta(days=1))
    assert selected_sources(later) == {"old"}


def test_a_version_that_is_current_everywhere_starts_no_run(migrated_db: str) -> None:
    run_of(V2, {"a": "Memo a."}, {"a": "succeeded"})
    sent = Sent()
    report = reprocess(V2, publish=sent, queue="q")
    assert report.run_id is None and sent.ids == [] and report.skipped == {"current": 1}


def test_a_schedule_never_has_two_unfinished_runs(corpus: dict[str, str]) -> None:
    first = reprocess(V2, publish=Sent(), queue="q", schedule="nightly")
    assert first.run_id is not None
    with pytest.raises(ScheduleBusy):
        reprocess(V2, publish=Sent(), queue="q", schedule="nightly")
    # The lock is the database's: a bare insert is refused too, even skipping the check.
    with pytest.raises(ScheduleBusy), session_scope() as s:
        repo.create_run(s, pipeline="summarise", version="x", model="m", queue="q",
                        schedule="nightly")
    # Another schedule, and runs without one, are not held back.
    with session_scope() as s:
        repo.create_run(s, pipeline="summarise", version="x", model="m", queue="q",
                        schedule="weekly")
        repo.create_run(s, pipeline="summarise", version="x", model="m", queue="q")
    with session_scope() as s:
        s.execute(update(Run).where(Run.id == first.run_id).values(status=RunStatus.FINISHED))
    again = reprocess(V2, publish=Sent(), queue="q", schedule="nightly")
    assert again.run_id is not None and again.run_id != first.run_id


def test_racing_ticks_start_one_run(corpus: dict[str, str]) -> None:
    barrier = threading.Barrier(4)
    started: list[int | None] = []
    refused: list[Exception] = []

    def tick() -> None:
        barrier.wait()
        try:
            started.append(reprocess(V2, publish=Sent(), queue="q", schedule="race").run_id)
        except ScheduleBusy as exc:
            refused.append(exc)

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(started) == 1 and len(refused) == 3
    with session_scope() as s:
        assert s.scalars(select(Run.id).where(Run.schedule == "race")).all() == started


def test_a_reprocessed_long_document_gets_its_tree(migrated_db: str) -> None:
    long_text = "\n\n".join(f"Paragraph {n}. " + "word " * 400 for n in range(60))
    run_of(V1, {"long": "Short text."}, {"long": "succeeded"})
    with session_scope() as s:
        repo.upsert_documents(s, [repo.NewDocument(content_hash(long_text), "long.md",
                                                   "text/markdown", len(long_text), long_text)])
    sent = Sent()
    report = reprocess(V2, publish=sent, queue="q", only=("missing",))
    assert report.long_documents == 1 and report.items == 1
    with session_scope() as s:
        items = s.scalars(select(Item).where(Item.run_id == report.run_id)).all()
    assert len(sent.ids) == len([i for i in items if i.level == 0]) > 1
    assert sum(1 for i in items if i.parent_id is None) == 1
    assert {i.status for i in items if i.level > 0} == {ItemStatus.BLOCKED}
