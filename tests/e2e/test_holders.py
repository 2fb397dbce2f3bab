"""Holders on real workers: every claim names a worker process that sends heartbeats, and a
live holder keeps a call longer than its lease."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support.corpus import write_corpus
from tests.support.stack import Stack
from tests.support.waiting import wait_until
from workers.db import repository as repo
from workers.db.models import Item, ItemStatus, utcnow
from workers.db.session import session_scope

pytestmark = pytest.mark.e2e


def holders(stack: Stack, run_id: int) -> set[str | None]:
    with session_scope(stack.database_url) as s:
        return set(s.scalars(select(Item.holder).where(Item.run_id == run_id,
                                                       Item.status == ItemStatus.RUNNING)))


def live(stack: Stack) -> set[str]:
    with session_scope(stack.database_url) as s:
        return {w.id for w in repo.live_workers(s, utcnow() - timedelta(seconds=3))}


def test_a_call_longer_than_the_lease_is_kept_by_its_living_holder(stack: Stack,
                                                                   tmp_path: Path) -> None:
    # Calls of 5 s against a 2 s lease, with the reconciler sweeping every second: without a
    # heartbeat renewing them, every lease runs out mid-call, the reconciler counts a lost
    # worker and sends the item again, and a second worker pays for a second call.
    write_corpus(tmp_path / "corpus", 4)
    stack.simulator.configure(latency_ms=5000, latency_sigma=0.01)
    stack.settings = {"lease_seconds": 2, "heartbeat_seconds": 0.5,
                      "reconcile_interval_seconds": 1, "request_timeout_seconds": 20}
    stack.start_workers(2, beat=True)
    run_id = stack.ingest(tmp_path / "corpus")["run_id"]

    # While the calls run, every claim names a process whose heartbeat is fresh.
    wait_until(lambda: len(holders(stack, run_id) - {None}) >= 1, timeout=30,
               what="the items to be claimed")
    named = holders(stack, run_id)
    assert None not in named and named <= live(stack), (named, live(stack))

    report = stack.wait_for(run_id, timeout=60)
    assert report.succeeded == 4 and report.failed == 0
    assert stack.simulator.stats()["counters"]["requests"] == 4, "one call per document"
    with session_scope(stack.database_url) as s:
        assert set(s.scalars(select(Item.worker_losses).where(Item.run_id == run_id))) == {0}

    # A worker that stops cleanly takes its row with it.
    before = live(stack)
    assert len(before) >= 2
    stack.stop_workers()
    assert live(stack) == set()
