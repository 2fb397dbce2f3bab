"""The ``document_results`` view on SQLite and PostgreSQL: one row per path a run was given,
a long document's calls summed into its row, duplicates carrying their document's result."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

from pipelines import SUMMARISE
from tests.integration.test_batches import _long_document
from workers.db import repository as repo
from workers.db.models import Item, Result, utcnow
from workers.db.session import session_scope
from workers.runs.ingest import ingest
from workers.settings import get_settings


def _publish(ids: list[int], *, queue: str) -> None:
    """Nothing consumes in this test: the calls are written by hand."""


def _answer(item: Item, *, cost: str, simulated: bool) -> None:
    with session_scope() as s:
        repo.record_attempt(s, repo.AttemptRecord(
            item_id=item.id, run_id=item.run_id, model="gpt-4.1-mini", outcome="ok",
            started_at=utcnow(), latency_ms=100, input_tokens=1000, cached_tokens=200,
            output_tokens=50, reasoning_tokens=10, cost_usd=Decimal(cost),
            simulated=simulated))


def test_one_row_a_path_with_summed_usage_and_traced_duplicates(
        migrated_db: str, configure: Any, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _long_document(corpus / "a-contract.md")
    (corpus / "b-note.txt").write_text("A short note about pallets.", encoding="utf-8")
    (corpus / "c-copy.txt").write_text("A short note about pallets.", encoding="utf-8")
    (corpus / "d-empty.txt").write_text("", encoding="utf-8")
    report = ingest([str(corpus)], SUMMARISE, settings=get_settings(), publish=_publish,
                    queue="docpipe.live")
    assert (report.items, report.duplicates, report.unreadable) == (2, 1, 1)

    with session_scope() as s:
        items = list(s.scalars(select(Item).where(Item.run_id == report.run_id)))
        s.expunge_all()
    contract = [i for i in items if i.source.endswith("a-contract.md")]
    note = next(i for i in items if i.source.endswith("b-note.txt"))
    leaves = [i for i in contract if i.parent_id is not None]
    assert len(leaves) >= 3, "the contract is a tree of chunks and reduces"
    for leaf in leaves:
        _answer(leaf, cost="0.001", simulated=False)
    _answer(note, cost="0.0005", simulated=True)
    with session_scope() as s:  # the note's answer, as a worker would store it
        result = Result(content_hash="h", pipeline_version="v", pipeline="summarise",
                        document_id=note.document_id, item_id=note.id,
                        output={"summary": "pallets"}, model="gpt-4.1-mini")
        s.add(result)
        s.flush()
        s.get(Item, note.id).result_id, s.get(Item, note.id).status = result.id, "succeeded"

    with session_scope() as s:
        rows = {row.source.rsplit("/", 1)[-1]: row
                for row in repo.iter_document_results(s, report.run_id)}
        direct = s.execute(text("SELECT count(*) FROM document_results WHERE run_id = :r"),
                           {"r": report.run_id}).scalar()
    assert sorted(rows) == ["a-contract.md", "b-note.txt", "c-copy.txt", "d-empty.txt"]
    assert direct == 4

    long = rows["a-contract.md"]
    assert (long.calls, long.input_tokens, long.cached_tokens, long.output_tokens,
            long.reasoning_tokens) == (len(leaves), 1000 * len(leaves), 200 * len(leaves),
                                       50 * len(leaves), 10 * len(leaves))
    assert long.cost_usd == Decimal("0.001") * len(leaves)
    assert long.latency_ms == 100 * len(leaves) and long.simulated is False
    assert (long.model, long.pipeline, long.pipeline_version) == (
        SUMMARISE.model, SUMMARISE.name, SUMMARISE.version)

    first, copy = rows["b-note.txt"], rows["c-copy.txt"]
    assert (first.status, first.output, first.calls, first.simulated) == (
        "succeeded", {"summary": "pallets"}, 1, True)
    assert first.duplicate_of is None
    assert copy.duplicate_of == first.source and copy.item_id == first.item_id
    assert (copy.status, copy.output, copy.simulated) == ("succeeded", first.output, True)
    assert (copy.calls, copy.input_tokens, copy.cost_usd) == (0, 0, 0), "paid once"

    empty = rows["d-empty.txt"]
    assert (empty.status, empty.error_code, empty.calls) == ("failed", "empty_file", 0)

    with session_scope() as s:
        run = repo.run_report(s, report.run_id)
        failed = [r.source for r in repo.iter_document_results(s, report.run_id,
                                                                failed_only=True)]
    assert run is not None and run.duplicates == 1 and run.simulated_calls == 1
    assert failed == [empty.source]


def test_reading_the_paths_again_records_no_new_duplicate(
        migrated_db: str, configure: Any, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("one.txt", "two.txt"):
        (corpus / name).write_text("the same words", encoding="utf-8")
    report = ingest([str(corpus)], SUMMARISE, settings=get_settings(), publish=_publish,
                    queue="docpipe.live")
    from workers.runs.ingest import finish_ingest

    again = finish_ingest(report.run_id, [str(corpus)], SUMMARISE, settings=get_settings(),
                          publish=_publish, queue="docpipe.live")
    assert (report.duplicates, again.duplicates, again.items) == (1, 0, 0)
    with session_scope() as s:
        assert [r.duplicate_of is not None
                for r in repo.iter_document_results(s, report.run_id)] == [False, True]
