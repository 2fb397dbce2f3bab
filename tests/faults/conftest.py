"""The faults layer: real services, real workers, and one fault at a time.

Every test ends with :func:`assert_accounted_for`, the invariant docpipe promises whatever
happened: each item of the run has exactly one result for its pipeline version, or is
failed with a reason; nothing is left pending; the broker's queue and unacked set are empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import pytest
import redis
from sqlalchemy import func, select

from tests.conftest import wait_until
from tests.e2e.conftest import Stack
from tests.support.services import SimulatorProcess
from workers.db.migrations import upgrade
from workers.db.models import Attempt, AttemptOutcome, Document, Item, ItemStatus, Result, Run
from workers.db.session import session_scope

pytestmark = pytest.mark.faults

#: Timings short enough for faults to play out within a test. The settings validator still
#: holds: every limit and wait stays below the visibility timeout.
FAULT_SETTINGS: dict[str, Any] = {
    "visibility_timeout_seconds": 12, "lease_seconds": 6, "task_soft_time_limit_seconds": 8,
    "task_time_limit_seconds": 10, "request_timeout_seconds": 4, "max_inline_wait_seconds": 2,
    "max_countdown_seconds": 4, "breaker_max_open_seconds": 8, "reconcile_interval_seconds": 1,
    "worker_liveness_seconds": 6,
}


@pytest.fixture
def stack(postgres_url: str, broker_url: str, simulator: SimulatorProcess, tmp_path: Path,
          configure: Any) -> Iterator[Stack]:
    """docpipe on PostgreSQL with fault-sized timings."""
    upgrade(postgres_url)
    configure(database_url=postgres_url)
    stack = Stack(postgres_url, broker_url, simulator, tmp_path, settings=dict(FAULT_SETTINGS))
    yield stack
    stack.stop_workers()


class Deployment(Protocol):
    """Where a run happened: a :class:`Stack`, or the soak benchmark's own services."""

    @property
    def database_url(self) -> str: ...

    @property
    def broker_url(self) -> str: ...


def assert_accounted_for(stack: Deployment, run_id: int, *, broker_timeout: float = 60) -> None:
    """Every document accounted for, exactly once, and nothing left in the broker."""
    with session_scope(stack.database_url) as s:
        run = s.get(Run, run_id)
        assert run is not None
        rows = s.execute(
            select(Item, Document.content_hash).outerjoin(Document, Document.id ==
                                                          Item.document_id)
            .where(Item.run_id == run_id)).all()
        assert rows, "the run has no items"
        for item, content_hash in rows:
            assert item.status in ItemStatus.TERMINAL, (item.id, item.status)
            if item.status == ItemStatus.SUCCEEDED:
                results = s.scalars(select(Result.id).where(
                    Result.content_hash == content_hash,
                    Result.pipeline_version == run.pipeline_version,
                    Result.chunk_index == item.chunk_index)).all()
                assert results == [item.result_id], (item.id, results)
            else:
                assert item.last_error_code and item.last_error_message, item.id
        # Each item's own tally of its calls (what status reads) equals its attempt rows.
        tallies = {item_id: (calls, Decimal(str(cost))) for item_id, calls, cost in s.execute(
            select(Attempt.item_id, func.count(), func.coalesce(func.sum(Attempt.cost_usd), 0))
            .where(Attempt.run_id == run_id, Attempt.outcome != AttemptOutcome.IN_FLIGHT)
            .group_by(Attempt.item_id))}
        for item, _ in rows:
            calls, cost = tallies.get(item.id, (0, Decimal(0)))
            assert (item.calls, Decimal(str(item.cost_usd))) == (calls, cost), item.id
        total = s.scalar(select(func.count()).select_from(Result)
                         .where(Result.pipeline_version == run.pipeline_version))
        # One result per (content, chunk): a long document has one per chunk and reduce.
        keys = {(h, item.chunk_index) for item, h in rows if item.status == ItemStatus.SUCCEEDED}
        assert total == len(keys)
    client = redis.Redis.from_url(stack.broker_url)

    def broker_empty() -> bool:
        queued = sum(int(client.llen(key)) for key in client.scan_iter("docpipe.*")
                     if client.type(key) == b"list")
        return queued == 0 and client.hlen("unacked") == 0

    wait_until(broker_empty, timeout=broker_timeout, interval=0.5,
               what="the broker's queues and unacked set to drain")
