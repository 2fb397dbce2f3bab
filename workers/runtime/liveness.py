"""A worker that stops consuming restarts itself.

Celery and kombu have a history of workers that survive a broker restart but never consume
again (celery#8030, celery#8091, kombu#2007); kombu 5.7's ``AttributeError`` under a channel
closed after its connection stopped one (:mod:`workers.runtime.transport` now makes that a
connection error). From the outside such a worker looks healthy.
This check looks at the symptom instead of any one cause: for a whole window, its queues
hold messages, it has free slots, and it received nothing. It then restarts the worker in
place, the way Celery's own SIGHUP handler does: a warm shutdown, then ``exec`` of the same
command line. Items are safe throughout; the database leases decide who processes what.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger("docpipe.worker")

#: Carries the time of the last crash restart across ``exec``, for the backoff.
RESTARTED_AT_ENV = "DOCPIPE_WORKER_RESTARTED_AT"
#: A worker up this long since its last crash restart starts its backoff afresh.
STABLE_SECONDS = 600.0
MAX_BACKOFF_SECONDS = 60.0

_ready = False


def mark_ready() -> None:
    """The worker started consuming: from now on, Celery giving up is a crash to restart."""
    global _ready
    _ready = True


def crash_restart_delay(exit_code: object, *, ready: bool, last_restart: float | None,
                        previous_delay: float, now: float) -> float | None:
    """Seconds to wait before restarting a worker whose Celery exited, or None to let it exit.

    Only a worker that was running and exited with an error is restarted: Celery gives up
    on errors it calls unrecoverable, such as kombu's ``AttributeError`` when a connection
    is torn down under an ack after a Redis restart. A clean shutdown, or a failure before
    the worker was ready (bad settings, an old schema), ends the process as it should. The
    delay doubles in a crash loop, up to a minute, and starts again once a worker stays up.
    """
    if not ready or exit_code in (0, None):
        return None
    if last_restart is None or now - last_restart > STABLE_SECONDS:
        return 1.0
    return min(MAX_BACKOFF_SECONDS, max(1.0, previous_delay * 2))


def restart_after_crash(exit_code: object) -> None:
    """Restart this worker in place if Celery gave up on it after it was running."""
    raw = os.environ.get(RESTARTED_AT_ENV, "")
    last, _, delay = raw.partition(":")
    now = time.time()
    wait = crash_restart_delay(exit_code, ready=_ready, last_restart=float(last) if last else None,
                               previous_delay=float(delay or 0), now=now)
    if wait is None:
        return
    log.error("the worker stopped after an unrecoverable error (exit code %s): restarting it "
              "in place in %.0f s", exit_code, wait)
    time.sleep(wait)
    os.environ[RESTARTED_AT_ENV] = f"{time.time()}:{wait}"
    _exec_self()


@dataclass
class Activity:
    """What the check watches; the worker's signal handlers keep it current."""

    last_received: float = field(default_factory=time.monotonic)

    def received(self) -> None:
        """A message was received: the consumer is alive."""
        self.last_received = time.monotonic()


@dataclass(frozen=True)
class Probe:
    """How the check reads the worker's state. Each returns None when it cannot tell."""

    #: Messages waiting in the queues this worker consumes.
    backlog: Callable[[], int | None]
    #: Tasks running in this worker.
    active: Callable[[], int]


class LivenessCheck:
    """Decides, one sample at a time, whether the worker has stopped consuming."""

    def __init__(self, *, window: float, concurrency: int, probe: Probe,
                 activity: Activity) -> None:
        self.window = window
        self.concurrency = concurrency
        self.probe = probe
        self.activity = activity
        self._starved_since: float | None = None

    def stalled(self, now: float | None = None) -> bool:
        """True once work has waited, unreceived, for a whole window while slots were free."""
        now = time.monotonic() if now is None else now
        backlog = self.probe.backlog()
        if not backlog or self.probe.active() >= self.concurrency:
            self._starved_since = None
            return False
        if self._starved_since is None:
            self._starved_since = now
        # The window restarts whenever a message does arrive.
        since = max(self._starved_since, self.activity.last_received)
        return now - since >= self.window


def restart_in_place(request_stop: Callable[[], None], grace: float) -> None:
    """Warm shutdown, then ``exec`` this same command; ``exec`` at once if shutdown hangs."""
    atexit.register(_exec_self)
    request_stop()
    time.sleep(grace)
    log.error("the worker did not shut down within %.0f s: restarting it now", grace)
    _exec_self()


def _exec_self() -> None:
    argv: Sequence[str] = sys.orig_argv
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *argv[1:]])


#: How long a worker that Celery gave up on may take to exit before it is restarted anyway.
CRASH_EXIT_GRACE_SECONDS = 10.0


def start(check: LivenessCheck, *, interval: float, on_stall: Callable[[], None],
          crashed: Callable[[], object] = lambda: None) -> threading.Thread:
    """Run ``check`` every ``interval`` seconds in a daemon thread; call ``on_stall`` once.

    ``crashed`` returns the exit code Celery set when it gave up (None while running). Its
    shutdown can then hang for good (joining a blueprint whose connection is half torn
    down), so past a grace period the worker is restarted from here, not from its exit.
    """

    def loop() -> None:
        crashed_since: float | None = None
        while True:
            time.sleep(interval)
            code = crashed()
            if code not in (None, 0):
                crashed_since = crashed_since or time.monotonic()
                if time.monotonic() - crashed_since >= CRASH_EXIT_GRACE_SECONDS:
                    log.error("the worker gave up (exit code %s) and has not exited within "
                              "%.0f s", code, CRASH_EXIT_GRACE_SECONDS)
                    restart_after_crash(code)
                continue
            try:
                stalled = check.stalled()
            except Exception:  # a failed probe never restarts a worker
                log.debug("liveness probe failed", exc_info=True)
                continue
            if stalled:
                log.error(
                    "this worker stopped consuming: messages waited %.0f s in its queues while "
                    "it had free slots and received none. Restarting it in place.", check.window)
                on_stall()
                return

    thread = threading.Thread(target=loop, name="docpipe-liveness", daemon=True)
    thread.start()
    return thread
