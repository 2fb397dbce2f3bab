"""Batch mode end to end: beat sends JSONL batches, collects them, retries and cancels."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support.accounting import assert_accounted_for
from tests.support.corpus import write_corpus
from tests.support.stack import Stack
from tests.support.waiting import wait_until
from workers.db.models import Attempt, AttemptOutcome, Batch, Item, ItemStatus
from workers.db.session import session_scope
from workers.errors import Usage
from workers.llm.pricing import Tier, cost_usd

pytestmark = pytest.mark.e2e


def batches_of(stack: Stack, run_id: int) -> list[Batch]:
    with session_scope(stack.database_url) as s:
        return list(s.scalars(select(Batch).where(Batch.run_id == run_id).order_by(Batch.id)))


def test_a_batch_run_is_split_collected_retried_and_billed_at_half(
        stack: Stack, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, 12)
    (corpus / "doc-0003.md").write_text((corpus / "doc-0003.md").read_text() + "\nFAILME\n")
    (corpus / "doc-0007.md").write_text((corpus / "doc-0007.md").read_text() + "\nLATE\n")
    (corpus / "copy.txt").write_text((corpus / "doc-0000.txt").read_text())
    stack.simulator.configure(batch_delay_seconds=0.5, batch_fail_on="FAILME",
                              batch_expire_on="LATE")
    stack.settings |= {"batch_poll_seconds": 1, "batch_max_requests": 5}
    stack.start_workers(1, beat=True)
    run_id = stack.cli("ingest", str(corpus), "--mode", "batch", "--json")["run_id"]

    # The first round: 12 items in files of at most 5 lines; one line fails, one expires.
    wait_until(lambda: sum(b.items for b in batches_of(stack, run_id)
                           if b.status == "ingested") >= 12, timeout=60,
               what="the first round of batches to be collected")
    first = batches_of(stack, run_id)
    assert [b.items for b in first[:3]] == [5, 5, 2]
    stack.simulator.configure(batch_fail_on=None, batch_expire_on=None)

    report = stack.wait_for(run_id, timeout=60)
    assert report.succeeded == 12 and report.failed == 0
    counters = stack.simulator.stats()["counters"]
    assert counters.get("ok", 0) == 0, "no live call"
    assert counters["batch_lines_ok"] == 12, "every document answered once, the copy never"
    with session_scope(stack.database_url) as s:
        attempts = s.scalars(select(Attempt).where(Attempt.run_id == run_id)).all()
        sources = {i.id: Path(i.source).name for i in s.scalars(
            select(Item).where(Item.run_id == run_id))}
        assert all(i.status == ItemStatus.SUCCEEDED and i.batch_id is not None
                   for i in s.scalars(select(Item).where(Item.run_id == run_id)))
    by_source: dict[str, list[str]] = {}
    for attempt in attempts:
        by_source.setdefault(sources[attempt.item_id], []).append(
            f"{attempt.outcome}:{attempt.error_code or attempt.http_status}")
    # Until the faults were switched off, each retry met them again (a retry may already be
    # in flight when the first round is seen collected); then it went through.
    for source, fault in (("doc-0003.md", "transient:http_500"),
                          ("doc-0007.md", "transient:batch_expired")):
        *errors, last = by_source[source]
        assert errors and set(errors) == {fault} and last == "ok:200", by_source[source]
    assert len(batches_of(stack, run_id)) >= 4  # the two retried in a batch of their own
    for attempt in attempts:
        if attempt.outcome == AttemptOutcome.OK:
            usage = Usage(input_tokens=attempt.input_tokens, cached_tokens=attempt.cached_tokens,
                          output_tokens=attempt.output_tokens)
            assert attempt.cost_usd == cost_usd(attempt.model, usage, tier=Tier.BATCH) > 0
            assert attempt.worker is not None and attempt.worker.startswith("batch:")
        else:
            assert attempt.cost_usd == 0
    assert_accounted_for(stack, run_id)


def test_cancel_stops_a_batch_run(stack: Stack, tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus", 3)
    stack.simulator.configure(batch_delay_seconds=60)
    stack.settings |= {"batch_poll_seconds": 1}
    stack.start_workers(1, beat=True)
    run_id = stack.cli("ingest", str(tmp_path / "corpus"), "--mode", "batch", "--json")["run_id"]
    wait_until(lambda: any(b.provider_batch_id for b in batches_of(stack, run_id)),
               timeout=30, what="the batch to be sent")

    cancelled = stack.cli("cancel", str(run_id), "--json")
    assert len(cancelled["batches_cancelled"]) == 1
    report = stack.wait_for(run_id, timeout=30)
    assert report.status_reason == "cancelled" and report.failed == 3
    assert report.errors == {"cancelled:cancelled": 3}
    [batch] = batches_of(stack, run_id)
    assert batch.status == "ingested" and batch.finished_at is not None
    assert stack.simulator.stats()["counters"].get("batch_lines_ok", 0) == 0


def test_a_line_that_expires_near_the_deadline_is_sent_live(stack: Stack,
                                                           tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, 4)
    (corpus / "doc-0003.md").write_text((corpus / "doc-0003.md").read_text() + "\nLATE\n")
    stack.simulator.configure(batch_delay_seconds=0.3, batch_expire_on="LATE")
    stack.settings |= {"batch_poll_seconds": 1}
    stack.start_workers(1, beat=True)
    # Due in 2 hours: another 24-hour batch could miss it, so the expired line goes live.
    run_id = stack.cli("ingest", str(corpus), "--mode", "batch", "--deadline-hours", "2",
                       "--json")["run_id"]
    report = stack.wait_for(run_id, timeout=60)
    assert report.succeeded == 4
    counters = stack.simulator.stats()["counters"]
    assert (counters["batch_lines_ok"], counters["ok"]) == (3, 1)
    with session_scope(stack.database_url) as s:
        late = s.scalars(select(Item).where(Item.run_id == run_id,
                                            Item.source.like("%doc-0003.md"))).one()
        attempts = s.scalars(select(Attempt).where(Attempt.item_id == late.id)
                             .order_by(Attempt.id)).all()
    assert late.send_live
    assert [(a.outcome, a.error_code) for a in attempts] == [
        ("transient", "batch_expired"), ("ok", None)]
    assert attempts[1].worker is not None and not attempts[1].worker.startswith("batch:")
    ok = attempts[1]
    assert ok.cost_usd == cost_usd(ok.model, Usage(input_tokens=ok.input_tokens,
                                                   cached_tokens=ok.cached_tokens,
                                                   output_tokens=ok.output_tokens))
