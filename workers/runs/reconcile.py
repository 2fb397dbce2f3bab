"""The reconciler: the database knows what is unfinished, so the broker may forget.

Finds items with no message in flight (never sent, lost by the broker, due after a wait, or
held by a worker that died) and publishes them again. Duplicates are harmless: a worker only
processes an item it can claim.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import redis

from workers.db import repository as repo
from workers.db.models import utcnow
from workers.db.session import session_scope
from workers.settings import Settings

Publisher = Callable[..., None]

#: How late a retry or a fresh item's own message may be before the sweep sends another.
MESSAGE_GRACE = timedelta(seconds=30)
#: kombu's Redis transport keeps delivered, unacknowledged messages in this hash.
UNACKED_KEY = "unacked"
#: Where the reconciler notes the Redis server (its INFO ``run_id``) it last swept against.
BROKER_MARKER = "docpipe:reconcile:broker-run-id"


def broker_reset_at(client: redis.Redis, queues: Sequence[str]) -> datetime | None:
    """When the broker lost messages, if it did since the previous sweep; else None.

    A restart shows as a new ``run_id``: messages sent before it may be gone (all of them
    without persistence, the last second with AOF ``everysec``). A FLUSHALL, or the first
    sweep against this Redis, shows as a missing marker. Either way, if ``queues`` and the
    unacked set still hold at least as many messages as the database has items queued, AOF
    kept them and nothing is re-sent (stragglers still come back after the visibility
    timeout). Otherwise every item queued before the loss is sent again at once, which
    beats waiting out the visibility timeout (an hour by default); a duplicate message
    costs one skipped claim.
    """
    info = client.info("server")
    run_id = str(info["run_id"])
    raw = client.getset(BROKER_MARKER, run_id)
    previous = raw.decode() if isinstance(raw, bytes) else raw
    if previous == run_id:
        return None
    held = sum(int(client.llen(q)) for q in queues) + int(client.hlen(UNACKED_KEY))
    with session_scope() as session:
        if held >= repo.count_queued(session):
            return None
    now = utcnow()
    if previous is None:
        return now
    # uptime_in_seconds is whole seconds: round the start down to be safe.
    return now - timedelta(seconds=int(info["uptime_in_seconds"]) + 1)


def requeue(
    run_id: int | None = None, *, settings: Settings, publish: Publisher,
    queued_grace_seconds: float | None = None, immediate: bool = False,
    broker_reset: datetime | None = None,
) -> int:
    """Publish every item of active runs that needs a message; return how many.

    Queued items count as lost only after ``queued_grace_seconds`` (default: the broker's
    visibility timeout), since until then Redis may still deliver them, or when they were
    queued before ``broker_reset`` (see :func:`broker_reset_at`). ``immediate`` (used by
    ``resume``) skips the grace given to items whose own message may still be coming.
    """
    now = utcnow()
    grace = settings.visibility_timeout_seconds if queued_grace_seconds is None \
        else queued_grace_seconds
    queued_before = now - timedelta(seconds=grace)
    if broker_reset is not None:
        queued_before = max(queued_before, broker_reset)
    # Take and mark the items in one transaction, then publish: concurrent reconcilers split
    # the work. If publishing fails, the items wait as queued until the next sweep that
    # counts them lost (after the visibility timeout).
    with session_scope() as session:
        by_queue = repo.items_to_requeue(
            session, run_id=run_id, queued_before=queued_before,
            due_before=now if immediate else now - MESSAGE_GRACE, lock=True,
        )
        repo.mark_requeued(session, [i for ids in by_queue.values() for i in ids])
    for queue, ids in by_queue.items():
        publish(ids, queue=queue)
    finish_done_runs(run_id)
    return sum(len(ids) for ids in by_queue.values())


def finish_done_runs(run_id: int | None = None) -> None:
    """Mark finished every running run (or just ``run_id``) whose items are all terminal."""
    with session_scope() as session:
        ids = [run_id] if run_id is not None else repo.running_run_ids(session)
    for one in ids:
        with session_scope() as session:
            repo.finish_run_if_done(session, one)
