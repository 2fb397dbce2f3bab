"""One item on its last chance at a time in each worker, across all of its processes.

An item one worker loss short of quarantine runs alone (:func:`workers.items.decide.alone_from`),
so that, if it is the poison document, it loses nothing else with it. "Alone" has to hold for
everything that dies together: the processes of one ``docpipe worker`` (its engine processes,
its prefork children) share a process group and, in a container, die together when its
memory runs out. A lock per process would let a sibling process run another last-chance item
beside the poison, to be lost with it a third time and quarantined although innocent. So the
lock is an ``flock`` on a file named for the process group: the kernel frees it when its
holder dies, whatever killed it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path


def lock_path() -> Path:
    """The lock file shared by the processes of this process's group."""
    return Path(tempfile.gettempdir()) / f"docpipe-alone-{os.getuid()}-{os.getpgid(0)}.lock"


def hold() -> Callable[[], None]:
    """Take this worker's last-chance lock (waiting for it if another thread or process of
    the worker holds it); return what lets it go, which any thread may call, at most once
    taking effect (the item's answer is written by another thread than the one that claimed
    it)."""
    fd = os.open(lock_path(), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    once = threading.Lock()

    def release() -> None:
        if once.acquire(blocking=False):
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
    return release


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Hold this worker's last-chance lock for the block."""
    release = hold()
    try:
        yield
    finally:
        release()
