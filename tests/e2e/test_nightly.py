"""Nightly reprocessing: a version change, `reprocess --only outdated`, and beat's ticks."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support.corpus import write_corpus, write_invoices
from tests.support.stack import Stack
from workers.db.models import Item, Run, RunStatus
from workers.db.session import session_scope

pytestmark = pytest.mark.e2e


def beat_tick(stack: Stack, schedule: str) -> None:
    """Send what beat sends when ``schedule`` is due: one task message, nothing else."""
    code = ("from workers.runtime.celery_app import TaskName, app; "
            f"app.send_task(TaskName.START_SCHEDULED.value, args=({schedule!r},))")
    subprocess.run([sys.executable, "-c", code], env=stack.env, check=True, timeout=60)


def runs_of(stack: Stack, schedule: str) -> list[Run]:
    with session_scope(stack.database_url) as s:
        return list(s.scalars(select(Run).where(Run.schedule == schedule).order_by(Run.id)))


def test_a_version_change_reprocesses_exactly_the_outdated_set_once_per_schedule(
        stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "house-pipelines"
    folder.mkdir()
    write_invoices(folder)
    nightly = {"pipeline": "invoices", "cron": "0 2 * * *", "only": ["outdated"]}
    stack.settings |= {"pipelines": str(folder), "schedules": json.dumps({"nightly": nightly})}
    write_corpus(tmp_path / "batch1", 8)
    stack.start_workers(1)
    first = stack.ingest(tmp_path / "batch1", pipeline="invoices")
    assert stack.wait_for(first["run_id"], timeout=60).succeeded == 8
    before = stack.cli("pipelines", "--json")
    old_version = {p["name"]: p["version"] for p in before}["invoices"]

    # The prompt changes; two more documents arrive, stored by another pipeline's run.
    write_invoices(folder, instructions="Extract the invoice, totals in cents.")
    after = stack.cli("pipelines", "--json")
    version = {p["name"]: p["version"] for p in after}["invoices"]
    assert version != old_version
    write_corpus(tmp_path / "batch2", 10)  # doc-0008 and doc-0009 are new
    stack.wait_for(stack.ingest(tmp_path / "batch2", pipeline="summarise")["run_id"],
                   timeout=60)

    # Slow answers keep the scheduled run going while beat ticks again.
    stack.simulator.configure(latency_ms=1500, latency_sigma=0.01)
    beat_tick(stack, "nightly")
    deadline = time.monotonic() + 30
    while not runs_of(stack, "nightly") and time.monotonic() < deadline:
        time.sleep(0.2)
    beat_tick(stack, "nightly")
    beat_tick(stack, "nightly")
    [run] = runs_of(stack, "nightly")
    report = stack.wait_for(run.id, timeout=90)
    time.sleep(2)  # the later ticks have been handled by now
    assert [r.id for r in runs_of(stack, "nightly")] == [run.id], "one run for three ticks"
    assert run.pipeline_version == version and run.queue == "docpipe.nightly"
    assert report.succeeded == 8 and report.reused == 0

    with session_scope(stack.database_url) as s:
        sources = {Path(p).name for p in s.scalars(select(Item.source).where(
            Item.run_id == run.id))}
    assert sources == {f"doc-{i:04d}.{('txt', 'md')[i % 2]}" for i in range(8)}, \
        "the outdated set, not the two documents the pipeline never saw"

    # The new version's results are the latest; the old version's are kept.
    def results(*args: str) -> list[dict[str, object]]:
        out = stack.cli("results", "--pipeline", "invoices", *args).stdout
        return [json.loads(line) for line in out.splitlines()]

    assert {r["pipeline_version"] for r in results()} == {version} and len(results()) == 8
    kept = results("--version", old_version)
    assert {r["pipeline_version"] for r in kept} == {old_version} and len(kept) == 8

    # Nothing is outdated any more: the next tick starts nothing.
    beat_tick(stack, "nightly")
    time.sleep(3)
    assert [r.id for r in runs_of(stack, "nightly")] == [run.id]
    assert all(r.status == RunStatus.FINISHED for r in runs_of(stack, "nightly"))

    # By hand, the two it never saw are `missing`.
    manual = stack.cli("reprocess", "--pipeline", "invoices", "--only", "missing", "--json")
    assert manual["selected"] == {"missing": 2} and manual["skipped"]["current"] == 8
