"""The reconciler on SQLite and PostgreSQL: run at once with itself, it sends each item once."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from sqlalchemy import select

from tests.integration.test_repository import new_run, race
from workers import reconcile
from workers.db import repository as repo
from workers.db.models import Item, ItemStatus
from workers.db.session import session_scope
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
        assert repo.claim_item(s, item_id, lease_seconds=0) is not None
    assert reconcile.requeue(run_id, settings=get_settings(), publish=lambda ids, **_: None,
                             immediate=True) == 1
    with session_scope() as s:
        assert repo.suspected_losses(s, item_id) == 1
        again = repo.claim_item(s, item_id, lease_seconds=60)
    assert again is not None and again.worker_losses == 1
