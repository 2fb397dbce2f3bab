"""Loaded into a test worker with ``celery worker -I``: Celery gives up on it once.

It sets what Celery's ``WorkController.start`` sets after an "unrecoverable error" (exit code
1), a second after the worker is ready, and never exits: the state kombu's teardown bug left
a worker in after a Redis restart, made on purpose. Only the first life of the process does
this; ``DOCPIPE_WORKER_RESTARTED_AT`` marks a restarted one.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from celery.signals import worker_ready


@worker_ready.connect
def give_up_once(sender: Any = None, **_: Any) -> None:
    if os.environ.get("DOCPIPE_WORKER_RESTARTED_AT") or sender is None:
        return
    controller = sender.controller

    def later() -> None:
        time.sleep(1)
        controller.exitcode = 1

    threading.Thread(target=later, daemon=True).start()
