"""Why a run waits with nothing moving, said in one line: no worker consumes its queue, or
no beat sends a batch run's items.

Workers are asked which queues they consume with Celery's ``inspect`` (a broadcast answered
within a second), at most every ``every`` seconds while a view is open. A batch run's items
go to the Batch API on beat's tick; a batch run whose items are still unsent after two ticks
and ten seconds has no beat sending them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from workers.db import repository as repo
from workers.db.session import session_scope

#: How long a batch run may have unsent items before the view says beat is missing, on top
#: of two of beat's ticks.
BEAT_GRACE_SECONDS = 10.0

Inspect = Callable[[], set[str] | None]


def consumed_queues(broker_url: str, *, timeout: float = 1.0) -> set[str] | None:
    """The queues the living workers consume, or None when the broker cannot be asked."""
    from celery import Celery

    app = Celery(broker=broker_url, set_as_current=False)
    # One try: a view must not stall on a broker that is down.
    app.conf.update(broker_connection_timeout=timeout, broker_connection_retry=False,
                    broker_connection_max_retries=0,
                    broker_transport_options={"socket_connect_timeout": timeout,
                                              "max_retries": 0})
    try:
        replies = app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception:  # the broker is down: the view says nothing rather than guess
        return None
    finally:
        app.close()
    return {queue["name"] for queues in replies.values() for queue in queues or ()}


class WaitingCheck:
    """Says why a run waits; asks the workers at most every ``every`` seconds."""

    def __init__(self, run_id: int, *, inspect: Inspect, batch_tick_seconds: float,
                 every: float = 10.0) -> None:
        with session_scope() as session:
            run = repo.get_run(session, run_id)
            self.queue = run.queue if run is not None else ""
        self._inspect = inspect
        self._batch_tick = batch_tick_seconds
        self._every = every
        self._asked_at: float | None = None
        self._consumed: set[str] | None = None

    def __call__(self, report: repo.RunReport) -> str | None:
        if report.status not in ("running", "ingesting") or report.pending == 0:
            return None
        if report.mode == "batch":
            unsent = report.by_status.get("pending", 0)
            age = (datetime.now(UTC) - report.created_at).total_seconds()
            if unsent and age > 2 * self._batch_tick + BEAT_GRACE_SECONDS:
                return (f"{unsent} items not yet sent to the Batch API after {age:.0f} s: beat "
                        "sends batch runs; start `docpipe beat` (or a worker with --beat)")
            return None
        now = time.monotonic()
        if self._asked_at is None or now - self._asked_at >= self._every:
            self._consumed = self._inspect()
            self._asked_at = now
        if self._consumed is not None and self.queue not in self._consumed:
            return (f"no worker consumes the queue {self.queue}: start one with "
                    f"`docpipe worker --queues {self.queue}`")
        return None
