"""An ingest cut off at any point (the broker down, a kill, Ctrl-C) leaves a run that
``docpipe resume`` finishes: its remaining documents are read again, each document gets
one item, and the run leaves ``ingesting``."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from sqlalchemy import func, select

from tests.support.accounting import assert_accounted_for
from tests.support.corpus import write_corpus
from tests.support.services import docpipe_argv, run_docpipe
from tests.support.stack import Stack
from tests.support.waiting import wait_until
from workers.db.models import Item, Run, RunStatus
from workers.db.session import session_scope
from workers.runtime.embedded import free_port


def items_of(stack: Stack, run_id: int) -> tuple[int, int]:
    """(items, distinct documents among them) of a run."""
    with session_scope(stack.database_url) as s:
        return (s.scalar(select(func.count()).where(Item.run_id == run_id)) or 0,
                s.scalar(select(func.count(func.distinct(Item.document_id)))
                         .where(Item.run_id == run_id)) or 0)


def status_of(stack: Stack, run_id: int) -> str:
    with session_scope(stack.database_url) as s:
        run = s.get(Run, run_id)
        assert run is not None
        return run.status


def latest_run(stack: Stack) -> int | None:
    with session_scope(stack.database_url) as s:
        return s.scalar(select(func.max(Run.id)))


def finish_with_resume(stack: Stack, run_id: int, documents: int) -> None:
    resumed = stack.cli("resume", str(run_id), "--json")
    assert resumed["ingested"] is not None, resumed
    stack.start_workers(1)
    report = stack.wait_for(run_id, timeout=120)
    assert (report.succeeded, report.failed) == (documents, 0)
    assert items_of(stack, run_id) == (documents, documents)
    assert_accounted_for(stack, run_id)


def test_the_broker_down_during_ingest(stack: Stack, tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus", 100)
    env = stack.env | {"DOCPIPE_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    cut = run_docpipe("ingest", str(tmp_path / "corpus"), env=env, check=False)
    assert cut.returncode == 4, cut.stderr
    (line,) = cut.stderr.strip().splitlines()
    run_id = latest_run(stack)
    assert run_id is not None
    assert f"`docpipe resume {run_id}` reads the rest" in line and "the broker at" in line
    assert status_of(stack, run_id) == RunStatus.INGESTING
    assert 0 < items_of(stack, run_id)[0] < 100  # the first batch was written, then it stopped
    finish_with_resume(stack, run_id, 100)


def test_an_ingest_killed_or_interrupted_midway(stack: Stack, tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus", 4000)
    for how in (signal.SIGKILL, signal.SIGINT):
        before = latest_run(stack) or 0
        ingest = subprocess.Popen(docpipe_argv("ingest", str(tmp_path / "corpus")),
                                  env=stack.env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        wait_until(lambda before=before: (latest_run(stack) or 0) > before
                   and items_of(stack, latest_run(stack) or 0)[0] > 0,
                   timeout=60, what="the ingest to write its first items")
        ingest.send_signal(how)
        _, stderr = ingest.communicate(timeout=60)
        run_id = latest_run(stack)
        assert run_id is not None
        assert status_of(stack, run_id) == RunStatus.INGESTING, "it ended before the signal"
        if how == signal.SIGINT:
            assert ingest.returncode == 130, stderr
            (line,) = stderr.strip().splitlines()
            assert line == (f"docpipe: interrupted; run {run_id} is kept: `docpipe resume "
                            f"{run_id}` reads the rest")
        assert items_of(stack, run_id)[0] < 4000
    # Both runs are read whole once resumed, and leave ingesting (processing them is the
    # broker test's: here no worker runs).
    for run_id in (latest_run(stack) or 0) - 1, latest_run(stack) or 0:
        resumed = stack.cli("resume", str(run_id), "--json")
        assert resumed["ingested"]["items"] > 0
        assert items_of(stack, run_id) == (4000, 4000)
        assert status_of(stack, run_id) == RunStatus.RUNNING
