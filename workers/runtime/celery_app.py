"""The Celery application: JSON only, late acks, one prefetched message, no result backend.

Results live in docpipe's own tables, so Celery keeps none; the broker only carries item ids.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from celery import Celery
from celery.schedules import crontab
from kombu import Queue as KombuQueue

from workers.process.memory import RECYCLE_SHARE
from workers.runtime import transport
from workers.settings import Settings, get_settings


class Queue(StrEnum):
    """One queue per kind of work, so nightly volume never delays live ingestion."""

    LIVE = "docpipe.live"
    NIGHTLY = "docpipe.nightly"
    CONTROL = "docpipe.control"


class TaskName(StrEnum):
    """Stable task names: renaming a module never orphans queued messages."""

    PROCESS_GROUP = "docpipe.items.process"
    RECONCILE = "docpipe.runs.reconcile"
    START_SCHEDULED = "docpipe.runs.start_scheduled"
    BATCH_TICK = "docpipe.batches.tick"


def create_celery(settings: Settings) -> Celery:
    """Build the Celery app from ``settings``."""
    transport.install()
    app = Celery(
        "docpipe",
        broker=settings.effective_broker_url,
        include=["workers.runtime.tasks", "workers.runtime.signals"],
    )
    visibility = settings.visibility_timeout_seconds
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_accept_content=["json"],
        event_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_queues=[KombuQueue(q.value, routing_key=q.value) for q in Queue],
        task_default_queue=Queue.LIVE.value,
        task_routes={TaskName.RECONCILE.value: {"queue": Queue.CONTROL.value},
                     TaskName.START_SCHEDULED.value: {"queue": Queue.CONTROL.value},
                     TaskName.BATCH_TICK.value: {"queue": Queue.CONTROL.value}},
        task_soft_time_limit=settings.task_soft_time_limit_seconds,
        task_time_limit=settings.task_time_limit_seconds,
        # kombu sweeps the unacked set only every interval x throttle seconds (100 s by
        # default), so a killed worker's messages would linger long after the visibility
        # timeout. One cheap sweep every few seconds brings them back on time.
        broker_transport_options={
            "visibility_timeout": visibility,
            "unacked_restore_interval": max(1, min(10, visibility // 4)),
            "unacked_restore_throttle": 1,
        },
        visibility_timeout=visibility,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_concurrency=settings.pool_concurrency,
        worker_pool=settings.worker_pool,
        beat_schedule={
            "reconcile": {"task": TaskName.RECONCILE.value,
                          "schedule": timedelta(seconds=settings.reconcile_interval_seconds)},
            "batches": {"task": TaskName.BATCH_TICK.value,
                        "schedule": timedelta(seconds=settings.batch_poll_seconds)},
            **{f"schedule:{name}": {"task": TaskName.START_SCHEDULED.value,
                                    "schedule": _crontab(spec.cron), "args": (name,)}
               for name, spec in settings.schedules.items()},
        },
        # Beat keeps when each entry last ran here, so a restart neither skips nor repeats.
        beat_schedule_filename=str(settings.beat_schedule_file),
        timezone="UTC",
    )
    if settings.worker_max_memory_mb is not None:
        # Recycle a child that grew between tasks before the hard limit has to kill one.
        app.conf.worker_max_memory_per_child = int(
            settings.worker_max_memory_mb * 1024 * RECYCLE_SHARE)
    if settings.celery_task_rate_limit:
        app.conf.task_annotations = {
            TaskName.PROCESS_GROUP.value: {"rate_limit": settings.celery_task_rate_limit}
        }
    return app


def _crontab(expression: str) -> crontab:
    minute, hour, day_of_month, month, day_of_week = expression.split()
    return crontab(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month,
                   day_of_week=day_of_week)


app = create_celery(get_settings())
