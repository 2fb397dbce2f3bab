"""A 300-page document: chunks processed in parallel, reduced in the database, one result."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from pipelines import get_pipeline
from pipelines.chunking import plan
from tests.support.accounting import assert_accounted_for
from tests.support.corpus import contract
from tests.support.stack import Stack
from workers.db.models import Attempt, AttemptOutcome, Item, ItemStatus, Result
from workers.db.session import session_scope

pytestmark = pytest.mark.e2e





@pytest.mark.parametrize("pipeline", ["summarise", "extract"])
def test_a_300_page_document_becomes_one_result(stack: Stack, tmp_path: Path,
                                                pipeline: str) -> None:
    text = contract(300)
    (tmp_path / "contract.md").write_text(text)
    chosen = get_pipeline(pipeline)
    assert chosen.max_input_tokens is not None
    nodes = plan(text, max_tokens=chosen.max_input_tokens, overlap=chosen.chunk_overlap,
                 fan_in=chosen.reduce_fan_in)
    assert nodes is not None and len([n for n in nodes if n.level == 0]) > 8
    stack.simulator.configure(latency_ms=200, latency_sigma=0.1)
    stack.settings |= {"worker_concurrency": 16}
    stack.start_workers(1)

    ingested = stack.ingest(tmp_path / "contract.md", pipeline=pipeline)
    assert (ingested["items"], ingested["long_documents"]) == (1, 1)
    report = stack.wait_for(ingested["run_id"], timeout=120)
    assert report.succeeded == len(nodes) and report.failed == 0
    assert stack.simulator.stats()["counters"]["ok"] == len(nodes), "one call per node"

    with session_scope(stack.database_url) as s:
        items = {i.id: i for i in s.scalars(select(Item).where(
            Item.run_id == ingested["run_id"]))}
        calls = {a.item_id: a for a in s.scalars(select(Attempt).where(
            Attempt.run_id == ingested["run_id"], Attempt.outcome == AttemptOutcome.OK))}
        root = next(i for i in items.values() if i.parent_id is None)
        result = s.get(Result, root.result_id)
        assert result is not None
        root_output = result.output
    assert root.chunk_index == -1 and root.status == ItemStatus.SUCCEEDED
    assert set(root_output) == set(chosen.schema["properties"])
    # The fan-in is in the database: a reduce is called only after all of its parts answered.
    for item in items.values():
        if item.parent_id is not None:
            child, parent = calls[item.id], calls[item.parent_id]
            assert parent.started_at >= child.started_at + timedelta(
                milliseconds=child.latency_ms) - timedelta(milliseconds=50)
    # Chunks run side by side: the whole took far less than the calls one after another.
    # (The fleet's first call goes alone, to learn the endpoint's rate limit: the others
    # start once it has answered, side by side.)
    depth = root.level + 1
    probe, *rest = sorted(calls.values(), key=lambda a: a.started_at)
    assert all(a.started_at >= probe.started_at + timedelta(milliseconds=probe.latency_ms)
               for a in rest)
    wall = max(a.started_at + timedelta(milliseconds=a.latency_ms) for a in rest) \
        - min(a.started_at for a in rest)
    sequential = sum((timedelta(milliseconds=a.latency_ms) for a in rest), timedelta())
    assert wall < sequential / 2, (wall, sequential, depth)
    assert_accounted_for(stack, ingested["run_id"])

    again = stack.wait_for(stack.ingest(tmp_path / "contract.md", pipeline=pipeline)["run_id"],
                           timeout=60)
    assert again.reused == len(nodes) and again.cost_usd == 0
    assert stack.simulator.stats()["counters"]["ok"] == len(nodes), "nothing is paid twice"


def test_the_estimate_bounds_what_long_documents_cost(stack: Stack, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "long.md").write_text(contract(120))
    (corpus / "longer.md").write_text(contract(200))
    (corpus / "copy.md").write_text(contract(120))
    (corpus / "short.txt").write_text("A one-line memo about the quarterly budget.")
    (corpus / "empty.txt").write_text("")
    before = stack.cli("estimate", str(corpus), "--json")
    assert (before["documents"], before["duplicates"], before["to_call"],
            before["long_documents"]) == (4, 1, 3, 2)
    assert [f["code"] for f in before["unreadable_files"]] == ["empty_file"]
    assert before["unreadable_files"][0]["path"].endswith("empty.txt")
    assert before["calls"] > 2 * before["to_call"] and before["reduce_input_tokens"] > 0

    stack.start_workers(1)
    # A budget of exactly the ceiling never pauses the run.
    ingested = stack.cli("ingest", str(corpus), "--budget-usd", str(before["ceiling_usd"]),
                         "--json")
    report = stack.wait_for(ingested["run_id"], timeout=120)
    assert report.failed == 1 and report.status_reason is None  # the empty file
    assert stack.simulator.stats()["counters"]["ok"] == before["calls"], "every call counted"
    assert float(report.cost_usd) <= before["ceiling_usd"]
    assert report.output_tokens <= before["max_output_tokens"]
    with session_scope(stack.database_url) as s:
        items = {i.id: i for i in s.scalars(select(Item).where(
            Item.run_id == ingested["run_id"]))}
        attempts = list(s.scalars(select(Attempt).where(
            Attempt.run_id == ingested["run_id"], Attempt.outcome == AttemptOutcome.OK)))
    # Documents and chunks are counted exactly (overlap included); reduces stay in the bound.
    leaves = sum(a.input_tokens for a in attempts if items[a.item_id].level == 0)
    reduces = sum(a.input_tokens for a in attempts if items[a.item_id].level > 0)
    assert leaves == before["input_tokens"]
    assert 0 < reduces <= before["reduce_input_tokens"]
