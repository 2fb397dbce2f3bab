"""``docpipe worker`` on every core: one worker process per core, each with its event loop.

A threads-pool worker is one Python process, so it uses one core. ``docpipe worker`` therefore
starts ``DOCPIPE_WORKER_PROCESSES`` of them (one per core unless set), as ``celery worker``
starts one pool process per core. Each is a whole Celery worker with its own node name
(the first keeps the one asked for; the others add ``-2``, ``-3``, ...), so Flower and
``celery inspect`` see each. Only the first runs beat, if asked, and serves the metrics of
all (they write to one folder). Signals go to every process; when one exits on its own the
others are stopped and its exit code is this command's, so the supervisor above (compose,
systemd, Kubernetes) restarts the whole worker.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType

log = logging.getLogger("docpipe.worker")

#: Set in each started process: it runs Celery itself instead of starting more.
CHILD_ENV = "DOCPIPE_WORKER_PROCESSES"
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)


def node_names(args: Sequence[str], count: int) -> list[list[str]]:
    """``args`` for each of ``count`` processes, each with a node name of its own."""
    rest = list(args)
    name = "celery@%h"
    for i, arg in enumerate(rest):
        if arg in ("-n", "--hostname") and i + 1 < len(rest):
            name = rest[i + 1]
            del rest[i : i + 2]
            break
        if arg.startswith("--hostname="):
            name = arg.split("=", 1)[1]
            del rest[i]
            break
    node, at, host = name.partition("@")
    return [[*rest, "--hostname", name if i == 0 else f"{node}-{i + 1}{at}{host}"]
            for i in range(count)]


def supervise(command: list[str], args: Sequence[str], *, count: int, beat: list[str],
              env: dict[str, str]) -> int:
    """Run ``count`` worker processes of ``command`` + their args; return the exit code."""
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def forward(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    child_env = env | {CHILD_ENV: "1"}
    for i, own in enumerate(node_names(args, count)):
        extra = beat if i == 0 else []
        this_env = child_env if i == 0 else {k: v for k, v in child_env.items()
                                             if k != "DOCPIPE_METRICS_PORT"}
        children.append(subprocess.Popen([*command, *extra, *own], env=this_env))
    code = 0
    while any(child.poll() is None for child in children):
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        exited = next((c for c in children if c.pid == pid), None)
        if exited is None:
            continue
        exited.returncode = os.waitstatus_to_exitcode(status)
        if not stopping:
            code = exited.returncode if exited.returncode > 0 else 1
            log.error("worker process %s exited (%s): stopping the others", pid,
                      exited.returncode)
            forward(signal.SIGTERM, None)
    for child in children:
        child.wait()
    return code


def own_command() -> list[str]:
    """How to start this program again: ``python -m workers``."""
    return [sys.executable, "-m", "workers"]
