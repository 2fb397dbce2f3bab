"""Ctrl-C on ``docpipe run``: the run is paused, one line says how to go on, and either
command it prints finishes the run in one-machine mode without paying for anything twice."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.support.corpus import write_corpus
from tests.support.services import docpipe_argv, docpipe_env, run_docpipe
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

DOCUMENTS = 300


def query(folder: Path, sql: str) -> list[tuple[object, ...]]:
    database = folder / ".docpipe" / "docpipe.db"
    if not database.exists():
        return []
    with sqlite3.connect(database) as connection:
        try:
            return connection.execute(sql).fetchall()
        except sqlite3.OperationalError:  # not migrated yet, or busy
            return []


def succeeded(folder: Path, run_id: int) -> int:
    rows = query(folder, f"SELECT count(*) FROM items WHERE run_id = {run_id} "
                 "AND status = 'succeeded'")
    return int(str(rows[0][0])) if rows else 0


def interrupt(folder: Path, env: dict[str, str], *args: str, run_id: int) -> str:
    """Start ``docpipe ARGS``, press Ctrl-C (SIGINT to its terminal's process group) once
    some documents are done, and return the line it printed."""
    process = subprocess.Popen(docpipe_argv(*args), env=env, cwd=folder, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    wait_until(lambda: succeeded(folder, run_id) >= 20, timeout=90,
               what="the run to get going")
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=90)
    assert process.returncode == 130, stderr
    (line,) = stderr.strip().splitlines()
    assert query(folder, f"SELECT status, status_reason FROM runs WHERE id = {run_id}") == [
        ("paused", "interrupted")]
    assert succeeded(folder, run_id) < DOCUMENTS, "it ended before Ctrl-C"
    return line


def assert_paid_once(folder: Path, run_id: int) -> None:
    assert query(folder, f"SELECT status FROM runs WHERE id = {run_id}") == [("finished",)]
    assert succeeded(folder, run_id) == DOCUMENTS
    paid = query(folder, "SELECT count(*) FROM attempts JOIN items ON items.id = "
                 f"attempts.item_id WHERE items.run_id = {run_id} AND attempts.outcome = 'ok'")
    assert paid == [(DOCUMENTS,)], "every document answered once"


def test_ctrl_c_then_the_same_command_or_resume_finishes_the_run(tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus", DOCUMENTS)
    (tmp_path / "other").mkdir()
    for path in (tmp_path / "corpus").iterdir():  # new texts: nothing to reuse from run 1
        (tmp_path / "other" / path.name).write_text(f"Second batch. {path.read_text()}")
    env = docpipe_env(worker_concurrency=2)
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)

    line = interrupt(tmp_path, env, "run", "corpus", "--simulate", run_id=1)
    assert line == ("docpipe: interrupted: run 1 is paused. `docpipe run corpus --simulate` "
                    "continues it (what it has done is not paid again), as does `docpipe "
                    "resume 1 --simulate`")
    again = run_docpipe("run", "corpus", "--simulate", env=env, cwd=tmp_path, timeout=180)
    assert "run 1 was stopped before it ended: continuing it" in again.stdout
    assert_paid_once(tmp_path, 1)

    interrupt(tmp_path, env, "run", "other", "--simulate", run_id=2)
    run_docpipe("resume", "2", "--simulate", env=env, cwd=tmp_path, timeout=180)
    assert_paid_once(tmp_path, 2)
