"""A task still running when Redis's visibility timeout hands its message out again."""

from __future__ import annotations

import time
from pathlib import Path

from pipelines import get_pipeline
from tests.support.accounting import assert_accounted_for
from tests.support.stack import FAULT_SETTINGS, Stack
from tests.support.waiting import wait_until
from workers.simulator import input_key

SLOW = "A slow memo: this call takes longer than the broker's visibility timeout."


def test_a_task_that_outlives_the_visibility_timeout_runs_once(stack: Stack, tmp_path: Path
                                                               ) -> None:
    # Worker A is configured consistently and holds the item's lease (50 s) while its call
    # takes 25 s. Worker B runs with a 5 s visibility timeout (a fleet configured
    # inconsistently), so B's broker sweep hands A's unacked message out again while A
    # still runs it. The database lease, not the broker, must keep it to one call.
    # (Consistent settings cannot produce this: the validator refuses them.)
    # 25 s leaves B time to start and sweep on a slow machine: with 10 s, a CI machine with
    # a third of its CPU stolen started B too late.
    (tmp_path / "slow.txt").write_text(SLOW)
    stack.simulator.configure(hang_on="slow memo", timeout_seconds=25)
    stack.settings = FAULT_SETTINGS | {
        "visibility_timeout_seconds": 80, "lease_seconds": 50, "task_soft_time_limit_seconds": 40,
        "task_time_limit_seconds": 45, "request_timeout_seconds": 30}
    stack.start_workers(1)
    run_id = stack.ingest(tmp_path / "slow.txt")["run_id"]
    wait_until(lambda: stack.simulator.stats()["counters"].get("requests", 0) == 1,
               timeout=30, what="worker A's call")

    stack.settings = FAULT_SETTINGS | {
        "visibility_timeout_seconds": 5, "lease_seconds": 4, "task_soft_time_limit_seconds": 3,
        "task_time_limit_seconds": 4, "request_timeout_seconds": 1,
        "max_inline_wait_seconds": 0.5, "max_countdown_seconds": 2,
        "breaker_max_open_seconds": 2, "reconcile_interval_seconds": 1}
    stack.start_workers(1)
    # B's sweep puts the message back on the queue; whichever worker takes it finds the item
    # leased and leaves it alone.
    wait_until(lambda: any("'skipped'" in w.log() for w in stack.workers), timeout=45,
               what="the message to be delivered again and skipped")

    report = stack.wait_for(run_id, timeout=45)
    assert report.succeeded == 1 and report.attempts == 1
    key = input_key(get_pipeline("summarise").request(SLOW))
    time.sleep(1)
    assert stack.simulator.stats()["calls_by_input"][key] == 1
    assert_accounted_for(stack, run_id)
