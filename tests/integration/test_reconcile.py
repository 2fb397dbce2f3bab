"""The reconciler on SQLite and PostgreSQL: run at once with itself, it sends each item once."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from typing import Any

import redis
from sqlalchemy import select

from tests.support.db import new_run, race
from tests.support.services import RedisServer
from workers.db import repository as repo
from workers.db.models import Item, ItemStatus, utcnow
from workers.db.session import session_scope
from workers.runs import reconcile
from workers.runtime.embedded import free_port
from workers.settings import get_settings


def test_concurrent_reconcilers_send_each_item_once(migrated_db: str) -> None:
    run_id, items = new_run([f"document {i}" for i in range(60)])
    sent: Counter[int] = Counter()
    lock = threading.Lock()

    def publish(ids: list[int], **_: Any) -> None:
        with lock:
            sent.update(ids)

    counts = race(4, lambda: reconcile.requeue(run_id, settings=get_settings(), publish=publish,
                                               immediate=True))
    assert sum(counts) == 60 and set(sent) == set(items) and set(sent.values()) == {1}
    with session_scope() as s:
        statuses = set(s.scalars(select(Item.status).where(Item.run_id == run_id)))
    assert statuses == {ItemStatus.QUEUED}


def test_a_lost_worker_found_by_the_reconciler_counts_once(migrated_db: str) -> None:
    run_id, (item_id,) = new_run(["held by a worker that died"])
    with session_scope() as s:
        assert repo.claim_item(s, item_id, lease_seconds=0, holder="test") is not None
    assert reconcile.requeue(run_id, settings=get_settings(), publish=lambda ids, **_: None,
                             immediate=True) == 1
    with session_scope() as s:
        assert repo.suspected_losses(s, item_id) == 1
        again = repo.claim_item(s, item_id, lease_seconds=60, holder="test")
    assert again is not None and again.worker_losses == 1


def test_a_broker_that_lost_messages_is_noticed_once(migrated_db: str, redis_url: str,
                                                     tmp_path: Any) -> None:
    _, items = new_run([f"waiting {i}" for i in range(3)])
    with session_scope() as s:
        repo.mark_queued(s, items)  # three messages should be in the broker
    queues = ["docpipe.live"]
    client = redis.Redis.from_url(redis_url)
    client.delete(reconcile.BROKER_MARKER, *queues)
    before = utcnow()
    first = reconcile.broker_reset_at(client, queues)  # no marker, no messages: lost
    assert first is not None and first >= before
    assert reconcile.broker_reset_at(client, queues) is None  # noticed once
    client.flushdb()
    assert reconcile.broker_reset_at(client, queues) is not None

    # Flushed, but the messages are all there (as after a restart on AOF): nothing lost.
    client.flushdb()
    client.lpush("docpipe.live", "m1", "m2", "m3")
    assert reconcile.broker_reset_at(client, queues) is None

    # A restarted server has a new run_id; what was queued before its start may be gone.
    own = RedisServer(free_port(), tmp_path / "redis")
    own.start()
    try:
        reconcile.broker_reset_at(redis.Redis.from_url(own.url), queues)
        own.kill()
        own.start()
        started = utcnow()
        reset = reconcile.broker_reset_at(redis.Redis.from_url(own.url), queues)
        assert reset is not None and started - timedelta(seconds=3) <= reset <= started
    finally:
        own.kill()


def test_items_queued_before_a_broker_reset_are_sent_again_at_once(migrated_db: str) -> None:
    run_id, items = new_run([f"queued {i}" for i in range(5)])
    with session_scope() as s:
        repo.mark_queued(s, items)
    sent: list[int] = []

    def publish(ids: list[int], **_: Any) -> None:
        sent.extend(ids)

    settings = get_settings()
    assert reconcile.requeue(run_id, settings=settings, publish=publish) == 0
    assert reconcile.requeue(run_id, settings=settings, publish=publish,
                             broker_reset=utcnow() - timedelta(days=1)) == 0
    assert reconcile.requeue(run_id, settings=settings, publish=publish,
                             broker_reset=utcnow()) == 5
    assert sorted(sent) == sorted(items)
