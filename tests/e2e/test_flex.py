"""Flex mode: the calls go at the flex tier, cost half, and ride out capacity refusals."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support.accounting import assert_accounted_for
from tests.support.corpus import write_corpus
from tests.support.stack import Stack
from workers.db.models import Attempt, AttemptOutcome, Run
from workers.db.session import session_scope
from workers.errors import Usage
from workers.llm.pricing import Tier, cost_usd

pytestmark = pytest.mark.e2e


def test_a_flex_run_costs_half_and_retries_resource_unavailable(
        stack: Stack, tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus", 20)
    stack.simulator.configure(flex_unavailable_rate=0.3)
    stack.start_workers(1)
    run_id = stack.cli("ingest", str(tmp_path / "corpus"), "--mode", "flex", "--json")["run_id"]
    report = stack.wait_for(run_id, timeout=90)
    assert report.succeeded == 20 and report.failed == 0

    counters = stack.simulator.stats()["counters"]
    assert counters["flex_unavailable"] > 0 and counters["ok"] == 20
    with session_scope(stack.database_url) as s:
        run = s.get(Run, run_id)
        assert run is not None and run.mode == "flex"
        attempts = s.scalars(select(Attempt).where(Attempt.run_id == run_id)).all()
    refused = [a for a in attempts if a.outcome == "capacity"]
    ok = [a for a in attempts if a.outcome == AttemptOutcome.OK]
    assert len(refused) == counters["flex_unavailable"] and len(ok) == 20
    # Refusals cost nothing and hold nobody back: no fleet cooldown, no attempt used up.
    assert all(a.cost_usd == 0 and a.http_status == 429 for a in refused)
    assert report.rate_limited == 0
    # Every answer is billed at the flex rate: half of what the same usage costs standard.
    for attempt in ok:
        usage = Usage(input_tokens=attempt.input_tokens, cached_tokens=attempt.cached_tokens,
                      output_tokens=attempt.output_tokens)
        assert attempt.cost_usd == cost_usd(attempt.model, usage, tier=Tier.FLEX)
        assert attempt.cost_usd * 2 == pytest.approx(cost_usd(attempt.model, usage),
                                                    abs=Decimal("0.000000002"))
    assert_accounted_for(stack, run_id)
