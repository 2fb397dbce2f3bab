"""Worker heartbeats: every process that claims items says, every few seconds, that it lives.

Each worker process that can hold items writes its row in ``worker_processes`` every
``heartbeat_seconds`` (:func:`workers.db.repository.beat`), under the token its claims name
(:mod:`workers.runtime.holding`). The same beat renews the leases of the items its tasks
work on, so a long call is never taken over while its process lives: the lease is only the
backstop for a live process that hangs on one item (an item held longer than the task's
time limit is no longer renewed).

A database outage only delays the beats: the thread logs once, keeps trying, and says when
it is back.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from workers.db import repository as repo
from workers.db.session import session_scope
from workers.runtime import holding
from workers.settings import Settings

log = logging.getLogger("docpipe.worker")


class Heartbeat:
    """One process's heartbeat."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.token = holding.token()
        self.beats = 0
        self.failing = False
        self._stop = threading.Event()

    def beat(self) -> bool:
        """Beat once: the row, then the leases of the items held here. False when the
        database could not be reached (the next beat tries again)."""
        settings = self.settings
        try:
            with session_scope() as session:
                anew = repo.beat(session, self.token, host=socket.gethostname(),
                                 pid=os.getpid())
                repo.renew_leases(session, holding.held(settings.task_time_limit_seconds),
                                  holder=self.token, lease_seconds=settings.lease_seconds)
        except Exception as exc:  # the database is away: beat again later
            if not self.failing:
                log.warning("worker heartbeat failed (%s: %s); retrying every %g s",
                            type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc)
                            else "", settings.heartbeat_seconds)
                self.failing = True
            return False
        if anew and self.beats:
            log.warning("this worker process's heartbeat row (%s) was gone: written again",
                        self.token)
        if self.failing:
            log.info("worker heartbeat is back")
            self.failing = False
        self.beats += 1
        return True

    def run(self) -> None:
        """Beat every ``heartbeat_seconds`` until :meth:`stop`."""
        while not self._stop.wait(self.settings.heartbeat_seconds):
            try:
                self.beat()
            except Exception:  # never let the heartbeat thread die
                log.exception("worker heartbeat failed")

    def stop(self) -> None:
        """Stop beating and remove this process's row: it ended cleanly."""
        self._stop.set()
        try:
            with session_scope() as session:
                repo.forget_workers(session, [self.token])
        except Exception:  # its row only ages; nothing holds on to it
            log.debug("could not remove this worker's heartbeat row", exc_info=True)


_current: Heartbeat | None = None
_current_pid: int | None = None


def start(settings: Settings) -> Heartbeat:
    """Start this process's heartbeat in a daemon thread, beating once first."""
    global _current, _current_pid
    heartbeat = Heartbeat(settings)
    heartbeat.beat()
    thread = threading.Thread(target=heartbeat.run, name="docpipe-heartbeat", daemon=True)
    thread.start()
    _current, _current_pid = heartbeat, os.getpid()
    return heartbeat


def current() -> Heartbeat | None:
    """This process's heartbeat, if it runs one (a forked child has its own, or none)."""
    return _current if _current_pid == os.getpid() else None


def stop() -> None:
    """Stop this process's heartbeat, if it runs one."""
    heartbeat = current()
    if heartbeat is not None:
        heartbeat.stop()
