"""PostgreSQL crash-stopped and started again while workers write."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from sqlalchemy import func, select

from tests.conftest import postgres_down, restart_postgres
from tests.support.accounting import assert_accounted_for
from tests.support.corpus import write_corpus
from tests.support.stack import Stack
from tests.support.waiting import wait_until
from workers.db.models import Item
from workers.db.session import session_scope


def test_postgres_restarted_immediately_during_writes(stack: Stack, tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus", 60)
    stack.simulator.configure(latency_ms=100, latency_sigma=0.1)
    stack.settings |= {"worker_concurrency": 8, "max_attempts": 10}
    stack.start_workers(2, beat=True)
    run_id = stack.ingest(tmp_path / "corpus")["run_id"]
    wait_until(lambda: stack.report(run_id).succeeded >= 10, timeout=60, what="10 successes")

    restart_postgres(down_seconds=2)  # -m immediate: connections cut, no clean shutdown

    report = stack.wait_for(run_id, timeout=120)
    assert report.succeeded == 60 and report.failed == 0
    for worker in stack.workers:
        assert worker.process is not None and worker.process.poll() is None
    assert_accounted_for(stack, run_id)


def test_a_task_that_cannot_claim_puts_its_message_back(stack: Stack, tmp_path: Path) -> None:
    # The database is away when the messages come. Each task waits for it as long as a holder
    # may be silent, then puts its message back on the queue, so once the database answers
    # the run ends: no beat here to send anything again, and the broker's visibility timeout
    # is an hour. Nothing is counted as a lost worker.
    write_corpus(tmp_path / "corpus", 20)
    stack.settings |= {"heartbeat_seconds": 0.5, "holder_timeout_seconds": 2,
                       "db_idle_transaction_seconds": 1}
    stack.start_workers(1)
    worker = stack.workers[0]
    assert worker.process is not None
    wait_until(lambda: " ready." in worker.log(), timeout=60, what="the worker to be ready")
    os.killpg(worker.process.pid, signal.SIGSTOP)  # the messages wait in the broker
    try:
        run_id = stack.ingest(tmp_path / "corpus")["run_id"]
        with postgres_down():
            os.killpg(worker.process.pid, signal.SIGCONT)
            # Until a task gave up waiting: its message goes back (or, were it acknowledged as
            # a failure, its items would wait an hour for the visibility timeout).
            wait_until(lambda: any(line in worker.log() for line in (
                "go back on docpipe.live", "raised unexpected")),
                timeout=60, what="a task to give up its claim")
    finally:
        os.killpg(worker.process.pid, signal.SIGCONT)
    report = stack.wait_for(run_id, timeout=60)
    assert report.succeeded == 20 and report.failed == 0
    with session_scope(stack.database_url) as s:
        assert s.scalar(select(func.sum(Item.worker_losses)).where(Item.run_id == run_id)) == 0
    assert_accounted_for(stack, run_id)


def test_answers_unwritable_through_an_outage_are_released_when_it_ends(
        stack: Stack, tmp_path: Path) -> None:
    # The database goes away with calls in flight and stays away until the writer gives up
    # on their answers. The worker keeps those items (held, their leases renewed) and
    # releases them as soon as the database answers, instead of letting their leases run
    # out: the run ends, and the outage counts no lost worker.
    write_corpus(tmp_path / "corpus", 8)
    stack.simulator.configure(latency_ms=500, latency_sigma=0.1)
    stack.settings |= {"heartbeat_seconds": 0.5, "holder_timeout_seconds": 2,
                       "db_idle_transaction_seconds": 1, "lease_seconds": 20,
                       "visibility_timeout_seconds": 60}
    stack.start_workers(1, beat=True)
    worker = stack.workers[0]
    run_id = stack.ingest(tmp_path / "corpus")["run_id"]
    wait_until(lambda: stack.report(run_id).attempts_by_outcome.get("in_flight", 0) >= 4,
               timeout=60, what="calls in flight")
    with postgres_down():
        wait_until(lambda: "could not release item" in worker.log(), timeout=60,
                   what="the writer to give up an answer")
    report = stack.wait_for(run_id, timeout=90)
    assert report.succeeded == 8 and report.failed == 0
    with session_scope(stack.database_url) as s:
        assert s.scalar(select(func.sum(Item.worker_losses)).where(Item.run_id == run_id)) == 0
    assert_accounted_for(stack, run_id)
