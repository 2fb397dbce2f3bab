"""The last-chance lock: one item at a time across the processes of one worker."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading

from workers.process.alone import alone, hold, lock_path

HOLD = """
import sys
import threading
from workers.process.alone import alone
with alone():
    print("held", flush=True)
    sys.stdin.read()
"""


def free_now() -> bool:
    fd = os.open(lock_path(), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def test_a_sibling_process_holds_it_until_it_dies() -> None:
    # Another process of the same group (as a worker's engine processes are) holds the lock:
    # this one cannot take it. Killed (SIGKILL, as an OOM killer would), it frees it at once.
    sibling = subprocess.Popen([sys.executable, "-c", HOLD], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE)
    try:
        assert sibling.stdout is not None and sibling.stdout.readline() == b"held\n"
        assert not free_now()
    finally:
        sibling.send_signal(signal.SIGKILL)
        sibling.wait()
    assert free_now()
    with alone():
        assert not free_now(), "a second holder in the same process waits too"
    assert free_now()


def test_the_lock_is_the_process_groups() -> None:
    assert str(os.getpgid(0)) in lock_path().name


def test_held_until_let_go_from_another_thread_once() -> None:
    # A suspect's lock is taken by the thread that claims it and let go by the writer's,
    # once its answer is written.
    release = hold()
    assert not free_now()
    letting_go = threading.Thread(target=release)
    letting_go.start()
    letting_go.join(10)
    assert free_now()
    release()  # a second call does nothing (and closes nothing twice)
    with alone():
        assert not free_now()
    assert free_now()
