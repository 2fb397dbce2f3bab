"""Prefork pool processes: one killed mid-call, and one past its memory limit."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from sqlalchemy import select

from tests.support.accounting import assert_accounted_for
from tests.support.corpus import write_corpus
from tests.support.stack import Stack
from tests.support.waiting import wait_until
from workers.db.models import Attempt, AttemptOutcome, Item, ItemStatus
from workers.db.session import session_scope

MARKED = "This memo is the one the fault waits for."


def marked_item(stack: Stack, run_id: int) -> Item:
    with session_scope(stack.database_url) as s:
        item = s.scalars(select(Item).where(Item.run_id == run_id,
                                            Item.source.like("%marked.txt"))).one()
        s.expunge(item)
        return item


def attempts_of(stack: Stack, item_id: int) -> list[Attempt]:
    with session_scope(stack.database_url) as s:
        rows = list(s.scalars(select(Attempt).where(Attempt.item_id == item_id)
                              .order_by(Attempt.id)))
        s.expunge_all()
        return rows


def worker_pid(stack: Stack) -> int:
    process = stack.workers[0].process
    assert process is not None and process.poll() is None, "the worker's main process died"
    return process.pid


def test_kill_9_of_a_pool_process_mid_call(stack: Stack, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, 20)
    (corpus / "marked.txt").write_text(MARKED)
    stack.simulator.configure(hang_on="the one the fault waits for", timeout_seconds=30)
    stack.settings |= {"worker_pool": "prefork", "worker_concurrency": 2}
    stack.start_workers(1, beat=True)
    main_pid = worker_pid(stack)
    run_id = stack.ingest(corpus)["run_id"]
    item_id = marked_item(stack, run_id).id

    def in_flight() -> Attempt | None:
        return next((a for a in attempts_of(stack, item_id)
                     if a.outcome == AttemptOutcome.IN_FLIGHT), None)

    wait_until(lambda: in_flight() is not None, timeout=60, what="the marked call in flight")
    attempt = in_flight()
    assert attempt is not None and attempt.worker is not None
    pid = int(attempt.worker.rsplit(":", 1)[1])
    assert pid != main_pid, "the call must run in a pool process"
    stack.simulator.configure(hang_on=None)
    os.kill(pid, signal.SIGKILL)

    report = stack.wait_for(run_id, timeout=90)
    assert report.succeeded == 21 and report.failed == 0
    assert worker_pid(stack) == main_pid, "the worker itself survives losing a pool process"
    calls = attempts_of(stack, item_id)
    lost = [a for a in calls if a.outcome == AttemptOutcome.LOST]
    assert [a.id for a in lost] == [attempt.id], "the killed call is on record, as lost"
    assert lost[0].error_code == "worker_lost" and lost[0].worker == attempt.worker
    assert [a.outcome for a in calls][-1] == AttemptOutcome.OK
    assert marked_item(stack, run_id).worker_losses == 1
    assert_accounted_for(stack, run_id)


def test_a_document_that_blows_the_memory_limit_is_quarantined(stack: Stack,
                                                               tmp_path: Path) -> None:
    # The simulator answers the marked document with a 768 MB body. Parsing it takes the
    # pool process past its 400 MB limit every time; the process records why and dies,
    # the worker lives on, and the item is quarantined after two losses.
    corpus = tmp_path / "corpus"
    write_corpus(corpus, 20)
    (corpus / "marked.txt").write_text(MARKED)
    stack.simulator.configure(bloat_on="the one the fault waits for", bloat_mb=768)
    stack.settings |= {"worker_pool": "prefork", "worker_concurrency": 2,
                       "worker_max_memory_mb": 400, "max_worker_losses": 2}
    stack.start_workers(1, beat=True)
    main_pid = worker_pid(stack)
    run_id = stack.ingest(corpus)["run_id"]

    report = stack.wait_for(run_id, timeout=120)
    assert report.succeeded == 20 and report.errors == {"dead:memory_limit": 1}
    assert worker_pid(stack) == main_pid, "only the pool process dies, never the worker"
    item = marked_item(stack, run_id)
    assert item.status == ItemStatus.FAILED and item.worker_losses == 2
    assert item.last_error_message is not None
    assert "passed its memory limit of 400 MB" in item.last_error_message
    calls = attempts_of(stack, item.id)
    assert [(a.outcome, a.error_code) for a in calls] == \
        [(AttemptOutcome.LOST, "memory_limit")] * 2
    assert_accounted_for(stack, run_id)
    wait_until(lambda: "passed its memory limit" in stack.workers[0].log(), timeout=30,
               what="the limit in the worker's log")
