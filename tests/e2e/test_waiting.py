"""A run that waits on something missing says what: no worker consumes its queue, or no beat
sends a batch run's items."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from celery import Celery

from tests.support.services import docpipe_argv
from tests.support.stack import Stack
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e


def test_a_queue_no_worker_consumes_is_named_with_the_command(stack: Stack,
                                                              tmp_path: Path) -> None:
    (tmp_path / "memo.txt").write_text("The board approved the budget for next year.")
    stack.start_workers(1)  # on the usual queues, not this run's
    control = Celery(broker=stack.broker_url)
    wait_until(lambda: bool(control.control.ping(timeout=1)), timeout=30, what="the worker")
    run_id = stack.cli("ingest", str(tmp_path / "memo.txt"), "--queue", "docpipe.other",
                       "--json")["run_id"]
    hint = ("waiting: no worker consumes the queue docpipe.other: start one with "
            "`docpipe worker --queues docpipe.other`")
    assert hint in " ".join(stack.cli("status", str(run_id)).stdout.split())

    # The live view says it too; it goes on until the run ends or pauses, so Ctrl-C it.
    view = subprocess.Popen(docpipe_argv("status", str(run_id), "--watch", "--interval", "0.2"),
                            env=stack.env, stdout=subprocess.PIPE, text=True)
    try:
        view.wait(timeout=6)
    except subprocess.TimeoutExpired:
        view.send_signal(signal.SIGINT)
    out, _ = view.communicate(timeout=30)
    assert "no worker consumes the queue docpipe.other" in " ".join(out.split())


def test_a_batch_run_without_beat_names_beat(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "memo.txt").write_text("The board approved the budget for next year.")
    stack.settings |= {"batch_poll_seconds": 1}
    run_id = stack.cli("ingest", str(tmp_path / "memo.txt"), "--mode", "batch",
                       "--json")["run_id"]
    assert "waiting:" not in stack.cli("status", str(run_id)).stdout  # beat has time yet
    wait_until(lambda: "start `docpipe beat`" in " ".join(
        stack.cli("status", str(run_id)).stdout.split()), timeout=60, interval=2,
        what="the view to name beat")
