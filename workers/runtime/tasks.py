"""Celery tasks. Each is thin: load by id, call the service, re-publish if it says so."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from datetime import timedelta
from typing import Any

import redis
from celery import Task
from celery.exceptions import Reject
from celery.worker.request import Request

import pipelines
from workers.admission.scripts import redis_client
from workers.admission.throttle import get_throttle
from workers.db.models import utcnow
from workers.db.session import is_outage
from workers.errors import ItemsFailed, ScheduleBusy
from workers.items import group
from workers.items.engine import item_engine
from workers.items.processing import Outcome
from workers.llm.client import files_and_batches
from workers.ops import metrics
from workers.runs import reconcile
from workers.runtime.celery_app import Queue, TaskName, app
from workers.runtime.publish import send_items
from workers.settings import get_settings

log = logging.getLogger("docpipe.tasks")
#: Longest a batch tick may hold the fleet's tick lock (uploading 200 MB included).
BATCH_TICK_LOCK_SECONDS = 900

#: What :func:`process_group` returns when its calls are out: its end is told to Celery's
#: events once their answers are written (:func:`report_end`), not now.
DETACHED = "calls out; the end is reported when their answers are written"


class GroupRequest(Request):
    """Celery's request of :func:`process_group`: one that returned :data:`DETACHED` sends
    no ``task-succeeded`` (Flower would keep it: a success outranks a later failure).

    Returning, not raising ``Ignore``: for an ``Ignore`` Celery formats a traceback of its
    tracer twice and logs a line, for every task.
    """

    def send_event(self, type: str, **fields: Any) -> None:
        if type == "task-succeeded" and fields.get("result") == _DETACHED_REPR:
            return
        super().send_event(type, **fields)


#: The result as the worker hands it to the event (the tracer's ``saferepr`` of it).
_DETACHED_REPR = repr(DETACHED)


@app.task(name=TaskName.PROCESS_GROUP, bind=True, ignore_result=True, throws=(ItemsFailed,),
          Request=GroupRequest)
def process_group(self: Task, item_ids: int | list[int]) -> str:  # type: ignore[type-arg]
    """Process a group of items by id (or one item: a bare id); the message carries nothing
    else.

    The message is acknowledged once the items are claimed and their calls sent: the
    database owns them from then on, and this process's writer writes the answers as they
    come. The task's end (success, or failure naming the failed items) is then reported to
    Celery's events, so Flower shows it when the last answer is written.

    Raises:
        ItemsFailed: items ended failed (after their decisions were written) before the task
            returned, so the task is a failure in Celery's events and Flower.
        Reject: the database could not be reached to claim the items: the message goes back
            on its queue.

    Returns:
        The items' statuses, or :data:`DETACHED` while their calls are out (the end is
        reported later).
    """
    settings = get_settings()
    ids = [item_ids] if isinstance(item_ids, int) else [int(i) for i in item_ids]
    delivery = self.request.delivery_info or {}
    queue = delivery.get("routing_key") or Queue.LIVE
    task_id, hostname, started = self.request.id, self.request.hostname, time.monotonic()

    def on_done(outcomes: dict[int, Outcome], detached: bool) -> None:
        follow_up(outcomes, queue=queue)
        if detached:
            report_end(task_id, hostname, outcomes, runtime=time.monotonic() - started)

    try:
        submitted = group.process_items(ids, settings=settings, engine=item_engine(settings),
                                        throttle=get_throttle(settings), on_done=on_done)
    except Exception as exc:
        if is_outage(exc):
            # The database stayed away past the claim's wait: the message goes back on its
            # queue (the items this process claimed before are skipped when it comes again),
            # instead of being acknowledged with its items unclaimed and no message left.
            log.warning("items %s go back on %s: the database could not be reached (%s)",
                        ids, queue, type(exc).__name__)
            raise Reject(exc, requeue=True) from exc
        raise
    if submitted.detach():
        return DETACHED
    failed = failures(submitted.outcomes)
    if failed:
        raise ItemsFailed(failed)
    return ",".join(sorted({o.status for o in submitted.outcomes.values()}))


def follow_up(outcomes: dict[int, Outcome], *, queue: str) -> None:
    """What the items' outcomes ask for: their metrics, the retries' delayed messages, and
    the reduces their successes unblocked."""
    retries: dict[float, list[int]] = defaultdict(list)
    unblocked: list[int] = []
    for item_id, outcome in outcomes.items():
        metrics.record_outcome(queue, outcome.status)
        if outcome.retry_in is not None:
            retries[outcome.retry_in].append(item_id)
        unblocked += outcome.send
    for countdown, waiting in retries.items():
        send_items(waiting, queue=queue, countdown=countdown)
    send_items(unblocked, queue=queue)


def failures(outcomes: dict[int, Outcome]) -> dict[int, str]:
    return {i: o.code or "failed" for i, o in outcomes.items() if o.status == "failed"}


def report_end(task_id: str | None, hostname: str | None, outcomes: dict[int, Outcome], *,
               runtime: float) -> None:
    """Tell Celery's events (Flower) how a task that returned before its answers ended."""
    if task_id is None:
        return
    failed = failures(outcomes)
    with app.events.default_dispatcher(hostname=hostname) as dispatcher:
        if failed:
            dispatcher.send("task-failed", uuid=task_id, exception=repr(ItemsFailed(failed)),
                            traceback="")
        else:
            dispatcher.send("task-succeeded", uuid=task_id, runtime=runtime,
                            result=repr(",".join(sorted({o.status
                                                         for o in outcomes.values()}))))


@app.task(name=TaskName.RECONCILE, ignore_result=True)
def reconcile_runs() -> int:
    """Re-enqueue items the broker lost or whose worker died; run by beat."""
    settings = get_settings()
    reset = reconcile.broker_reset_at(redis_client(settings.effective_broker_url),
                                      [q.value for q in Queue])
    return reconcile.requeue(settings=settings, publish=send_items, broker_reset=reset)


@app.task(name=TaskName.START_SCHEDULED, ignore_result=True)
def start_scheduled(name: str) -> int | None:
    """Start schedule ``name``'s reprocessing run, unless its previous run is unfinished."""
    from workers.llm.pricing import price_table
    from workers.runs import reprocess as reprocessing

    settings = get_settings()
    spec = settings.schedules.get(name)
    if spec is None:
        log.warning("beat asked for schedule %r, which is not configured", name)
        return None
    pipeline = pipelines.get_pipeline(spec.pipeline, settings.pipelines)
    since = None if spec.since_days is None else utcnow() - timedelta(days=spec.since_days)
    try:
        report = reprocessing.reprocess(
            pipeline, publish=send_items, queue=spec.queue, only=spec.only, since=since,
            where=spec.where, budget_usd=spec.budget_usd, schedule=name, mode=spec.mode,
            prices=price_table(settings),
            deadline_at=None if spec.deadline_hours is None
            else utcnow() + timedelta(hours=spec.deadline_hours))
    except ScheduleBusy as exc:
        log.info("schedule %s not started: %s", name, exc)
        return None
    log.info("schedule %s: %s", name, report.as_dict())
    return report.run_id


@app.task(name=TaskName.BATCH_TICK, ignore_result=True)
def batch_tick() -> dict[str, int]:
    """Send waiting batch-mode items as batches and take in the batches that ended."""
    from dataclasses import asdict

    from workers.runs import batch_mode as batches

    settings = get_settings()
    # One tick at a time across the fleet: beat fires again while a long tick (a large file
    # to build and upload) still runs, and two ticks would split and collect the same items.
    lock = redis_client(settings.effective_broker_url).lock(
        "docpipe:batches:tick", timeout=BATCH_TICK_LOCK_SECONDS, blocking=False)
    if not lock.acquire():
        return {}
    try:
        report = batches.tick(settings, files_and_batches(settings), send_items)
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:  # it expired meanwhile; the next tick goes on
            log.warning("the batch tick outlived its lock (%s s)", BATCH_TICK_LOCK_SECONDS)
    if report != batches.TickReport():
        log.info("batches: %s", asdict(report))
    return asdict(report)
