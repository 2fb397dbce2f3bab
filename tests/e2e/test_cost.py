"""Spend: a run with a budget pauses before passing it, and resumes with a new one."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support.corpus import write_corpus
from tests.support.stack import Stack
from workers.db.models import Attempt, AttemptOutcome, Run
from workers.db.session import session_scope

pytestmark = pytest.mark.e2e


def spend(stack: Stack, run_id: int) -> tuple[Decimal, Decimal, Decimal]:
    """(spent counter, reserved counter, sum of the attempts' real costs)."""
    with session_scope(stack.database_url) as s:
        run = s.get(Run, run_id)
        assert run is not None
        costs = s.scalars(select(Attempt.cost_usd).where(Attempt.run_id == run_id)).all()
        return run.spent_usd, run.reserved_usd, sum(costs, Decimal(0))


def test_a_budget_pauses_the_run_and_resume_with_a_new_one_finishes_it(
        stack: Stack, tmp_path: Path) -> None:
    # 20 calls cost about $0.0002 each on gpt-4.1-mini; each is held at its worst case
    # (about $0.0020, every output token used) while in flight. One call at a time, so a
    # $0.004 budget pauses the run after about ten.
    write_corpus(tmp_path / "corpus", 20)
    stack.settings |= {"worker_concurrency": 1}
    stack.start_workers(1)
    run_id = stack.cli("ingest", str(tmp_path / "corpus"), "--budget-usd", "0.004",
                       "--json")["run_id"]

    stack.wait_for(run_id, status="paused", timeout=60)
    time.sleep(1)  # a call in flight when the run paused lands now
    paused = stack.report(run_id)
    assert paused.status_reason is not None
    assert paused.status_reason.startswith("budget (budget_exhausted): the budget of $0.0040 "
                                           "is reached: $0.00")
    assert f"`docpipe resume {run_id} --budget-usd AMOUNT`" in paused.status_reason
    spent, reserved, real = spend(stack, run_id)
    assert reserved == 0 and spent == real and spent <= Decimal("0.004")
    assert 5 <= paused.succeeded < 20 and paused.failed == 0
    shown = " ".join(stack.cli("status", str(run_id)).stdout.split())  # unwrapped
    assert "budget $0.0040 ($0.0000 held for calls in flight)" in shown
    assert "projected $" in shown and "per item p50 $" in shown

    assert stack.cli("resume", str(run_id), "--budget-usd", "1", "--json")["run_id"] == run_id
    final = stack.wait_for(run_id, timeout=60)
    assert final.succeeded == 20 and final.failed == 0
    spent, reserved, real = spend(stack, run_id)
    assert reserved == 0 and spent == real == final.cost_usd
    assert final.budget_usd == Decimal(1)
    # Nothing was paid twice: one successful call per document, none refused.
    assert final.attempts_by_outcome == {AttemptOutcome.OK: 20}
    assert final.projected_cost_usd == final.cost_usd
    assert set(final.cost_per_item) == {"p50", "p90", "max"}


def test_an_estimate_then_runs_that_never_pay_for_the_same_content_twice(
        stack: Stack, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    originals = write_corpus(corpus, 21)
    for i, original in enumerate(originals[:9]):  # 9 of 30 files (30%) are copies
        (corpus / f"copy-{i}.txt").write_text(original.read_text())

    before = stack.cli("estimate", str(corpus), "--json")
    assert (before["documents"], before["duplicates"], before["already_done"],
            before["to_call"]) == (30, 9, 0, 21)
    assert before["expected_usd"] is None and before["calls_seen"] == 0
    assert before["ceiling_usd"] == pytest.approx(2 * before["ceiling_batch_usd"])

    stack.start_workers(1)
    first = stack.wait_for(stack.ingest(corpus)["run_id"], timeout=60)
    assert first.succeeded == 21 and first.total == 21
    sim = stack.simulator.stats()["counters"]
    assert sim["ok"] == 21, "one call per unique document"
    # The offline count is what the simulator bills (it counts the same way; the real API
    # frames messages a little differently).
    assert first.input_tokens == before["input_tokens"]
    assert before["ceiling_usd"] > float(first.cost_usd)

    again = stack.cli("estimate", str(corpus), "--json")
    assert (again["already_done"], again["to_call"], again["input_tokens"]) == (21, 0, 0)
    assert again["calls_seen"] == 21 and again["expected_usd"] == 0
    second = stack.wait_for(stack.ingest(corpus)["run_id"], timeout=60)
    assert second.succeeded == 21 and second.reused == 21 and second.cost_usd == 0
    assert stack.simulator.stats()["counters"]["ok"] == 21, "the second run calls nothing"
