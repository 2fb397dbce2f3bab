"""A hard memory limit per pool process, so one document cannot take a whole host down.

A container's OOM killer takes the whole worker (every pool process and every call in
flight) when one document blows its memory. With ``DOCPIPE_WORKER_MAX_MEMORY_MB`` each
prefork child watches its own resident size and, past the limit, records why on the call it
is making and kills itself with SIGKILL, as uWSGI's ``evil-reload-on-rss`` does. Its parent
starts a fresh child; the item's lease expires and the reconciler sends it again; after
``DOCPIPE_MAX_WORKER_LOSSES`` such losses the item is quarantined. Celery's
``worker_max_memory_per_child`` (set lower) recycles children that merely grew between tasks.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("docpipe.worker")

#: How often the watchdog samples the resident size.
INTERVAL_SECONDS = 0.05
#: Celery recycles a child that ends a task above this share of the hard limit.
RECYCLE_SHARE = 0.75

_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """This process's resident set size, from ``/proc/self/statm``."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE


@dataclass(frozen=True)
class Call:
    """The call this process is making: what the watchdog names when it kills the process."""

    item_id: int
    attempt_id: int


#: The calls in flight in this process, by attempt id: a group's calls share the process, and
#: which of them blew its memory cannot be told, so each is named.
_current: dict[int, Call] = {}


def begin_call(item_id: int, attempt_id: int) -> None:
    """Mark a call in flight until :func:`end_call`."""
    _current[attempt_id] = Call(item_id, attempt_id)


def end_call(attempt_id: int) -> None:
    """The call is answered (or was never sent)."""
    _current.pop(attempt_id, None)


OnLimit = Callable[[list[Call], str], None]


def start_watchdog(limit_mb: int, on_limit: OnLimit) -> threading.Thread:
    """Watch this process's memory; past ``limit_mb``, report through ``on_limit``, then die.

    ``on_limit`` gets the calls in flight and a message, and should record it durably; it
    runs while memory still grows, so it must be quick.
    """
    limit = limit_mb * 1024 * 1024

    def watch() -> None:
        while True:
            time.sleep(INTERVAL_SECONDS)
            used = resident_bytes()
            if used <= limit:
                continue
            message = (f"the worker process passed its memory limit of {limit_mb} MB "
                       f"({used // (1024 * 1024)} MB resident) during this call and was killed")
            calls = list(_current.values())
            log.error("%s (items %s)", message,
                      ", ".join(str(c.item_id) for c in calls) or "none")
            if len(calls) > 1:
                message += f", one of {len(calls)} calls in flight in the process"
            if calls:
                try:
                    on_limit(calls, message)
                except Exception:  # dying anyway; the claim after this still counts the loss
                    log.exception("could not record the memory limit on the attempts")
            os.kill(os.getpid(), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="docpipe-memory-watchdog", daemon=True)
    thread.start()
    return thread
