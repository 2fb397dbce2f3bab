"""What must hold after any run, whatever was done to it: every item accounted for once."""

from __future__ import annotations

import base64
import json
import time
from decimal import Decimal
from typing import Any, Protocol

import redis
from sqlalchemy import func, select

from tests.support.waiting import wait_until
from workers.db import states
from workers.db.models import Attempt, AttemptOutcome, Document, Item, ItemStatus, Result, Run
from workers.db.session import session_scope


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
            # The state machine's table is the invariant: a state it knows, and a terminal
            # one, with no worker still holding the item.
            assert item.status in states.ALL and item.status in ItemStatus.TERMINAL, (
                item.id, item.status)
            assert item.lease_expires_at is None, (item.id, item.status)
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

    try:
        wait_until(broker_empty, timeout=broker_timeout, interval=0.5,
                   what="the broker's queues and unacked set to drain")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {broker_leftovers(client, stack.database_url)}") from None


def broker_leftovers(client: redis.Redis, database_url: str) -> str:
    """What is still in the broker: each queue's length, and each unacked message's task,
    items (with their states), age and ETA."""
    queues = {_text(key): int(client.llen(key)) for key in client.scan_iter("docpipe.*")
              if client.type(key) == b"list"}
    now = time.time()
    scored: Any = client.zrange("unacked_index", 0, -1, withscores=True)
    ages = {_text(tag): now - float(score) for tag, score in scored}
    unacked = []
    for tag, raw in client.hgetall("unacked").items():
        message = json.loads(raw)[0]  # kombu keeps [message, exchange, routing key]
        headers = message.get("headers", {})
        body = json.loads(base64.b64decode(message["body"]))
        ids = body[0][0] if body and body[0] else None
        ids = ids if isinstance(ids, list) else [ids]
        with session_scope(database_url) as s:
            states_of = dict(s.execute(select(Item.id, Item.status)
                                       .where(Item.id.in_([i for i in ids if isinstance(i, int)]))
                                       ).all())
        unacked.append({"task": headers.get("task"), "eta": headers.get("eta"),
                        "age_s": round(ages.get(_text(tag), -1), 1),
                        "items": {i: str(states_of.get(i)) for i in ids}})
    return json.dumps({"queues": queues, "unacked": unacked[:20],
                       "unacked_count": len(unacked)}, default=str)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
