"""The reconciler: the database knows what is unfinished, so the broker may forget.

Finds items with no message in flight (never sent, lost by the broker, due after a wait, or
held by a worker that died) and publishes them again. Duplicates are harmless: a worker only
processes an item it can claim.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from workers.db import repository as repo
from workers.db.models import utcnow
from workers.db.session import session_scope
from workers.settings import Settings

Publisher = Callable[..., None]

#: How late a retry or a fresh item's own message may be before the sweep sends another.
MESSAGE_GRACE = timedelta(seconds=30)


def requeue(
    run_id: int | None = None, *, settings: Settings, publish: Publisher,
    queued_grace_seconds: float | None = None, immediate: bool = False,
) -> int:
    """Publish every item of active runs that needs a message; return how many.

    Queued items count as lost only after ``queued_grace_seconds`` (default: the broker's
    visibility timeout), since until then Redis may still deliver them. ``immediate`` (used
    by ``resume``) skips the grace given to items whose own message may still be coming.
    """
    now = utcnow()
    grace = settings.visibility_timeout_seconds if queued_grace_seconds is None \
        else queued_grace_seconds
    # Take and mark the items in one transaction, then publish: concurrent reconcilers split
    # the work. If publishing fails, the items wait as queued until the next sweep that
    # counts them lost (after the visibility timeout).
    with session_scope() as session:
        by_queue = repo.items_to_requeue(
            session, run_id=run_id, queued_before=now - timedelta(seconds=grace),
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
