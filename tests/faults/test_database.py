"""PostgreSQL crash-stopped and started again while workers write."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import restart_postgres
from tests.support.accounting import assert_accounted_for
from tests.support.corpus import write_corpus
from tests.support.stack import Stack
from tests.support.waiting import wait_until


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
