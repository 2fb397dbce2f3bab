"""A Redis of the test's own, killed and restarted, or not there yet when workers start."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.support.accounting import assert_accounted_for
from tests.support.corpus import write_corpus
from tests.support.services import RedisServer
from tests.support.stack import Stack
from tests.support.waiting import wait_until
from workers.db.models import Item
from workers.db.session import session_scope
from workers.runtime.embedded import free_port


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path / "redis", password="faults-secret")
    yield server
    server.kill()


def on(stack: Stack, server: RedisServer) -> Stack:
    return replace(stack, broker_url=server.url)


def test_redis_killed_and_restarted_mid_run(stack: Stack, own_redis: RedisServer,
                                            tmp_path: Path) -> None:
    own_redis.start()
    stack = on(stack, own_redis)
    write_corpus(tmp_path / "corpus", 40)
    stack.simulator.configure(latency_ms=300, latency_sigma=0.1)
    stack.settings |= {"worker_concurrency": 4}
    stack.start_workers(1, beat=True)
    try:
        run_id = stack.ingest(tmp_path / "corpus")["run_id"]
        wait_until(lambda: stack.report(run_id).succeeded >= 5, timeout=60, what="5 successes")
        own_redis.kill()
        time.sleep(2)  # calls in flight finish; the worker's connection is gone
        own_redis.start()  # AOF: the queue and the unacked set come back
        report = stack.wait_for(run_id, timeout=120)
        assert report.succeeded == 40 and report.failed == 0
        assert stack.workers[0].process is not None
        assert stack.workers[0].process.poll() is None, "the worker must survive the restart"
        with session_scope(stack.database_url) as s:
            losses = s.scalar(select(func.sum(Item.worker_losses)).where(Item.run_id == run_id))
        assert losses == 0, "an outage of Redis is not a lost worker"
        assert_accounted_for(stack, run_id)
        log = stack.workers[0].log()
        shown = own_redis.url.replace(":faults-secret@", ":***@")
        lost = log.count(f"the broker {shown} was lost (")
        assert lost >= 1, "the worker names the broker it lost, its password hidden"
        assert log.count(f"the broker {shown} answers again after ") == lost
        assert "faults-secret" not in log
    finally:
        stack.stop_workers()


def test_a_worker_started_before_redis_exists(stack: Stack, own_redis: RedisServer,
                                              tmp_path: Path) -> None:
    stack = on(stack, own_redis)
    write_corpus(tmp_path / "corpus", 10)
    stack.start_workers(1)
    try:
        time.sleep(3)
        assert stack.workers[0].process is not None
        assert stack.workers[0].process.poll() is None, "the worker must wait for its broker"
        own_redis.start()
        run_id = stack.ingest(tmp_path / "corpus")["run_id"]
        report = stack.wait_for(run_id, timeout=60)
        assert report.succeeded == 10
        assert_accounted_for(stack, run_id)
        assert "faults-secret" not in stack.workers[0].log()
    finally:
        stack.stop_workers()
