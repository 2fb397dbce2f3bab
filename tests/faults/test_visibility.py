"""A message delivered again while its item's call is out: the broker's visibility timeout,
a producer's retry, or ``resume`` during a run."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import redis
from kombu import Connection
from sqlalchemy import select

from pipelines import get_pipeline
from tests.support.accounting import assert_accounted_for
from tests.support.stack import FAULT_SETTINGS, Stack
from tests.support.waiting import wait_until
from workers.db.models import Item
from workers.db.session import session_scope
from workers.simulator import input_key

SLOW = "A slow memo: this call takes longer than the broker's visibility timeout."


def _deliver_again(stack: Stack, item_id: int) -> None:
    """Publish the item's message again, as Celery's JSON protocol carries it."""
    with Connection(stack.broker_url) as conn:
        conn.Producer().publish(
            json.dumps([[item_id], {}, {"callbacks": None, "errbacks": None, "chain": None,
                                        "chord": None}]),
            routing_key="docpipe.live", content_type="application/json",
            content_encoding="utf-8",
            headers={"lang": "py", "task": "docpipe.items.process", "id": str(uuid.uuid4()),
                     "argsrepr": f"({item_id},)", "kwargsrepr": "{}"})


def test_a_task_that_outlives_the_visibility_timeout_runs_once(stack: Stack, tmp_path: Path
                                                               ) -> None:
    # Worker A is configured consistently and holds the item's lease (50 s) while its call
    # takes 25 s. Worker B runs with a 5 s visibility timeout (a fleet configured
    # inconsistently), whose broker sweep would hand out again any message A still had
    # unacknowledged. A acknowledges the message once the item is claimed, so the sweep
    # finds nothing; the item's message, published again meanwhile, finds the item leased.
    # The database lease, not the broker, must keep it to one call.
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
    # Acknowledged at claim: nothing of the run is left for a broker to hand out again.
    broker = redis.Redis.from_url(stack.broker_url)
    wait_until(lambda: broker.hlen("unacked") == 0, timeout=10,
               what="A to acknowledge the message once its item is claimed")

    stack.settings = FAULT_SETTINGS | {
        "visibility_timeout_seconds": 5, "lease_seconds": 4, "task_soft_time_limit_seconds": 3,
        "task_time_limit_seconds": 4, "request_timeout_seconds": 1,
        "max_inline_wait_seconds": 0.5, "max_countdown_seconds": 2,
        "breaker_max_open_seconds": 2, "reconcile_interval_seconds": 1}
    stack.start_workers(1)
    with session_scope(stack.database_url) as session:
        (item_id,) = session.scalars(select(Item.id).where(Item.run_id == run_id))
    _deliver_again(stack, item_id)
    # Whichever worker takes the message again finds the item leased and leaves it alone.
    wait_until(lambda: any("'skipped'" in w.log() for w in stack.workers), timeout=45,
               what="the message to be delivered again and skipped")

    report = stack.wait_for(run_id, timeout=45)
    assert report.succeeded == 1 and report.attempts == 1
    key = input_key(get_pipeline("summarise").request(SLOW))
    time.sleep(1)
    assert stack.simulator.stats()["calls_by_input"][key] == 1
    assert_accounted_for(stack, run_id)
