"""A poison document: whenever a worker takes it, the worker dies."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import select

from tests.support.accounting import assert_accounted_for
from tests.support.corpus import write_corpus
from tests.support.stack import Stack
from tests.support.waiting import wait_until
from workers.db.models import Item, ItemStatus
from workers.db.session import session_scope
from workers.settings import Settings

POISON = "This memo is poison for whoever processes it."


def test_a_document_that_kills_its_worker_is_quarantined(stack: Stack, tmp_path: Path) -> None:
    # The simulator holds the poison document's call open, and the test kills the worker
    # holding it, every time: what the kernel's OOM killer does to a worker that blows its
    # memory on one document. The other documents must not suffer. The default timings (a
    # 600 s lease, a 30 s holder timeout): the worker started after each kill finds the dead
    # one's claim by its heartbeat, not by its lease.
    corpus = tmp_path / "corpus"
    write_corpus(corpus, 20)
    (corpus / "poison.txt").write_text(POISON)
    stack.simulator.configure(hang_on="poison for whoever", timeout_seconds=600)
    stack.settings = {"worker_concurrency": 4, "max_worker_losses": 2}
    timeout = Settings().holder_timeout_seconds
    stack.start_workers(1, beat=True)
    run_id = stack.ingest(corpus)["run_id"]

    def poison_item() -> Item:
        with session_scope(stack.database_url) as s:
            item = s.scalars(select(Item).where(Item.run_id == run_id,
                                                Item.source.like("%poison.txt"))).one()
            s.expunge(item)
            return item

    kills, claims = 0, 0
    first_claim: float | None = None

    def taken_again_or_quarantined() -> bool:
        item = poison_item()
        return item.status == ItemStatus.FAILED or (
            item.status == ItemStatus.RUNNING and item.attempts > claims)

    while True:
        if kills == 2:
            # The claim after the second loss quarantines the item at once; a poll can still
            # catch that claim's moment of 'running' before the failure is written. The checks
            # below (dead:worker_lost, the quarantine message) catch a call made instead.
            wait_until(lambda: poison_item().status == ItemStatus.FAILED, timeout=timeout + 60,
                       what="the poison item to be quarantined after two lost workers")
            break
        wait_until(taken_again_or_quarantined, timeout=timeout + 60,
                   what="the poison item to be taken")
        first_claim = first_claim or time.monotonic()
        item = poison_item()
        if item.status == ItemStatus.FAILED:
            break
        assert kills < 2, "the poison item must be quarantined after two lost workers"
        claims = item.attempts
        stack.workers[0].kill()
        kills += 1
        stack.workers.clear()
        stack.start_workers(1, beat=True)

    quarantined = time.monotonic() - (first_claim or 0.0)
    report = stack.wait_for(run_id, timeout=90)
    assert kills == 2
    # Each death is found about one holder timeout after the kill (the new worker judges
    # others once it has beaten for that long itself), not after the 600 s lease.
    assert quarantined < 2 * (timeout + 20), f"quarantined {quarantined:.0f} s after its claim"
    assert report.succeeded == 20 and report.errors == {"dead:worker_lost": 1}
    item = poison_item()
    assert item.worker_losses == 2
    assert item.last_error_message is not None
    assert item.last_error_message.startswith("quarantined: its worker was lost 2 times")
    assert_accounted_for(stack, run_id)
