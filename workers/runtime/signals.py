"""Worker lifecycle hooks: the one place for per-process setup and start-up checks."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    task_received,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from celery.worker import state as worker_state

from workers.admission.scripts import redis_client
from workers.db import repository as repo
from workers.db.session import (
    dispose_engines,
    ensure_migrated,
    forget_inherited_engines,
    session_scope,
)
from workers.errors import ConfigurationError
from workers.ops import logs, metrics
from workers.process import holding, memory
from workers.runtime import broker_log, failures, heartbeat, liveness
from workers.runtime.celery_app import Queue
from workers.settings import get_settings

log = logging.getLogger("docpipe.worker")


@worker_init.connect
def check_before_start(**_: Any) -> None:
    """Refuse to start on an un-migrated or unreachable database or without an API key,
    with one line saying which."""
    settings = get_settings()
    try:
        ensure_migrated()
        if settings.openai_api_key is None:
            raise ConfigurationError("OPENAI_API_KEY is not set: workers cannot call the API")
    except ConfigurationError as exc:
        # SystemExit passes through Celery's signal dispatch, which swallows Exceptions.
        raise SystemExit(f"docpipe worker: {exc}") from exc
    except Exception as exc:
        failure = failures.explain(exc, settings)
        if failure is None:
            raise
        raise SystemExit(f"docpipe worker: {failure.line()}") from exc
    log.info("docpipe worker ready: database migrated, model API at %s",
             settings.openai_base_url or "https://api.openai.com/v1")


@after_setup_logger.connect
@after_setup_task_logger.connect
def format_logs(logger: logging.Logger | None = None, **_: Any) -> None:
    """JSON lines when ``DOCPIPE_LOG_FORMAT=json``; the item's context on every record."""
    if logger is not None:
        settings = get_settings()
        logs.use_format(logger.handlers, settings.log_format)
        broker_log.install(logger.handlers, settings.effective_broker_url)


_activity = liveness.Activity()


@task_received.connect
def on_received(request: Any = None, **_: Any) -> None:
    _activity.received()
    tag = getattr(getattr(request, "message", None), "delivery_tag", None)
    if tag is None:
        return
    settings = get_settings()
    try:
        # So that, if this process dies, a sweep puts the message back at once.
        heartbeat.record_delivery(redis_client(settings.effective_broker_url),
                                  holding.token(), str(tag),
                                  ttl_seconds=settings.visibility_timeout_seconds)
        heartbeat.note_received(str(tag), request)
    except Exception:  # the broker is away: the visibility timeout stays the backstop
        log.debug("could not record delivery %s", tag, exc_info=True)


@worker_ready.connect
def watch_liveness(sender: Any = None, **_: Any) -> None:
    """Start the check that restarts this worker if it stops consuming (see liveness)."""
    liveness.mark_ready()
    settings = get_settings()
    if not settings.worker_liveness_seconds or sender is None:
        return
    queues = sorted(sender.app.amqp.queues.consume_from)
    client = redis_client(settings.effective_broker_url)

    def backlog() -> int | None:
        try:
            return sum(int(client.llen(q)) for q in queues)
        except Exception:  # broker down: the consumer is reconnecting, not stalled
            return None

    def stop() -> None:
        # The warm shutdown that Celery's own SIGHUP restart requests.
        worker_state.should_stop = 0  # type: ignore[assignment]

    window = settings.worker_liveness_seconds
    check = liveness.LivenessCheck(
        window=window, concurrency=settings.pool_concurrency, activity=_activity,
        probe=liveness.Probe(backlog=backlog, active=lambda: len(worker_state.active_requests)))
    controller = getattr(sender, "controller", None)
    liveness.start(check, interval=min(5.0, window / 4), on_stall=lambda: liveness.restart_in_place(
        stop, grace=settings.task_time_limit_seconds + 10),
        crashed=lambda: getattr(controller, "exitcode", None))


@worker_ready.connect
def serve_metrics(**_: Any) -> None:
    """Serve this worker's Prometheus metrics, if ``DOCPIPE_METRICS_PORT`` is set."""
    settings = get_settings()
    if settings.metrics_port is None:
        return
    metrics.serve(port=settings.metrics_port, address=settings.metrics_address,
                  queues=[q.value for q in Queue], broker_url=settings.effective_broker_url)


@worker_process_init.connect
def after_fork(**_: Any) -> None:
    """A forked pool child builds its own engine, and watches its memory if limited."""
    forget_inherited_engines()
    heartbeat.start(get_settings())
    limit = get_settings().worker_max_memory_mb
    if limit is not None:
        memory.start_watchdog(limit, _record_memory_loss)
    _warm_up()


@worker_ready.connect
def beat_while_alive(**_: Any) -> None:
    """The main process beats: it consumes the messages (so it keeps its deliveries, and a
    sweep puts them back if it dies), sweeps for dead holders, and with a threads or solo
    pool claims the items too. A prefork pool's children each beat for their own claims
    (:func:`after_fork`)."""
    from workers.runtime.celery_app import app
    from workers.runtime.publish import send_items

    settings = get_settings()
    heartbeat.start(settings, publish=send_items,
                    restore=heartbeat.restorer(settings, app.connection_for_write),
                    consumer=True)


@worker_shutdown.connect
def stop_beating(**_: Any) -> None:
    _drain_calls()
    heartbeat.stop()


def _drain_calls() -> None:
    # A task returns once its calls are sent: they still hold their items, under this
    # process's heartbeat, until their answers are written. A warm shutdown waits for them.
    from workers.items import writer

    timeout = get_settings().request_timeout_seconds + 5
    if not writer.drain(timeout):
        log.warning("calls still out after %g s at shutdown: their items are sent again "
                    "once this process is found dead", timeout)


@worker_ready.connect
def warm_up(**_: Any) -> None:
    """The process that runs the tasks (threads or solo pool) gets ready before the first."""
    if get_settings().worker_pool != "prefork":
        _warm_up()


def _warm_up() -> None:
    # The event loop, its client and the tokenizer's tables (a second of CPU) are built
    # once per process: before the first task, so its calls do not wait for them.
    from pipelines.tokens import encoding
    from workers.items.engine import item_engine

    encoding()
    item_engine(get_settings())


def _record_memory_loss(calls: list[memory.Call], message: str) -> None:
    with session_scope() as session:
        for call in calls:
            repo.close_lost_attempts(session, call.item_id, attempt_id=call.attempt_id,
                                     code="memory_limit", message=message)


@worker_process_shutdown.connect
def on_process_shutdown(pid: int | None = None, **_: Any) -> None:
    _drain_calls()
    heartbeat.stop()
    dispose_engines()
    if pid is not None:
        metrics.process_exited(pid)
