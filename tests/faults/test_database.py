"""PostgreSQL crash-stopped and started again while workers write."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from sqlalchemy import create_engine, func, select, text

from tests.conftest import postgres_down, restart_postgres
from tests.support.accounting import assert_accounted_for
from tests.support.corpus import write_corpus
from tests.support.locks import LockWaits
from tests.support.stack import Stack
from tests.support.waiting import wait_until
from workers.db.models import Item
from workers.db.models import WorkerProcess as WorkerRow
from workers.db.session import application_name, session_scope


def test_postgres_restarted_immediately_during_writes(stack: Stack, tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus", 60)
    stack.simulator.configure(latency_ms=100, latency_sigma=0.1)
    stack.settings |= {"worker_concurrency": 8, "max_attempts": 10}
    stack.start_workers(2, beat=True)
    run_id = stack.ingest(tmp_path / "corpus")["run_id"]
    wait_until(lambda: stack.report(run_id).succeeded >= 10, timeout=60, what="10 successes")

    restart_postgres(down_seconds=2)  # -m immediate: connections cut, no clean shutdown

    report = stack.wait_for(run_id, timeout=120)
    assert report.succeeded == 60 and report.failed == 0
    for worker in stack.workers:
        assert worker.process is not None and worker.process.poll() is None
    assert_accounted_for(stack, run_id)


def test_a_task_that_cannot_claim_puts_its_message_back(stack: Stack, tmp_path: Path) -> None:
    # The database is away when the messages come. Each task waits for it as long as a holder
    # may be silent, then puts its message back on the queue, so once the database answers
    # the run ends: no beat here to send anything again, and the broker's visibility timeout
    # is an hour. Nothing is counted as a lost worker.
    write_corpus(tmp_path / "corpus", 20)
    stack.settings |= {"heartbeat_seconds": 0.5, "holder_timeout_seconds": 2,
                       "db_idle_transaction_seconds": 1}
    stack.start_workers(1)
    worker = stack.workers[0]
    assert worker.process is not None
    wait_until(lambda: " ready." in worker.log(), timeout=60, what="the worker to be ready")
    os.killpg(worker.process.pid, signal.SIGSTOP)  # the messages wait in the broker
    try:
        run_id = stack.ingest(tmp_path / "corpus")["run_id"]
        with postgres_down():
            os.killpg(worker.process.pid, signal.SIGCONT)
            # Until a task gave up waiting: its message goes back (or, were it acknowledged as
            # a failure, its items would wait an hour for the visibility timeout).
            wait_until(lambda: any(line in worker.log() for line in (
                "go back on docpipe.live", "raised unexpected")),
                timeout=60, what="a task to give up its claim")
    finally:
        os.killpg(worker.process.pid, signal.SIGCONT)
    report = stack.wait_for(run_id, timeout=60)
    assert report.succeeded == 20 and report.failed == 0
    with session_scope(stack.database_url) as s:
        assert s.scalar(select(func.sum(Item.worker_losses)).where(Item.run_id == run_id)) == 0
    assert_accounted_for(stack, run_id)


def test_answers_unwritable_through_an_outage_are_released_when_it_ends(
        stack: Stack, tmp_path: Path) -> None:
    # The database goes away with calls in flight and stays away until the writer gives up
    # on their answers. The worker keeps those items (held, their leases renewed) and
    # releases them as soon as the database answers, instead of letting their leases run
    # out: the run ends, and the outage counts no lost worker.
    write_corpus(tmp_path / "corpus", 8)
    stack.simulator.configure(latency_ms=500, latency_sigma=0.1)
    stack.settings |= {"heartbeat_seconds": 0.5, "holder_timeout_seconds": 2,
                       "db_idle_transaction_seconds": 1, "lease_seconds": 20,
                       "visibility_timeout_seconds": 60}
    stack.start_workers(1, beat=True)
    worker = stack.workers[0]
    run_id = stack.ingest(tmp_path / "corpus")["run_id"]
    wait_until(lambda: stack.report(run_id).attempts_by_outcome.get("in_flight", 0) >= 4,
               timeout=60, what="calls in flight")
    with postgres_down():
        wait_until(lambda: "could not release item" in worker.log(), timeout=60,
                   what="the writer to give up an answer")
    report = stack.wait_for(run_id, timeout=90)
    assert report.succeeded == 8 and report.failed == 0
    with session_scope(stack.database_url) as s:
        assert s.scalar(select(func.sum(Item.worker_losses)).where(Item.run_id == run_id)) == 0
    assert_accounted_for(stack, run_id)


def _sessions_of(database_url: str, pgid: int) -> list[str]:
    """The ``application_name`` of every worker process of the process group ``pgid``."""
    with session_scope(database_url) as s:
        rows = s.execute(select(WorkerRow.id, WorkerRow.pid)).all()
    return [application_name(token) for token, pid in rows if _in_group(pid, pgid)]


def _in_group(pid: int, pgid: int) -> bool:
    try:
        return os.getpgid(pid) == pgid
    except ProcessLookupError:
        return False


def _stop_inside_a_transaction(database_url: str, pgid: int) -> tuple[int, str]:
    """SIGSTOP the process group ``pgid`` at a moment one of its sessions is inside a
    transaction that wrote (it holds row locks); return that session's backend pid and
    what it last ran. Tries again until it catches one."""
    open_writes = text(
        "SELECT pid, backend_xid::text, query FROM pg_stat_activity "
        "WHERE state = 'idle in transaction' AND backend_xid IS NOT NULL "
        "AND application_name = ANY(:names)")
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            deadline = time.monotonic() + 60
            names = _sessions_of(database_url, pgid)
            while time.monotonic() < deadline:
                seen = {(pid, xid): query for pid, xid, query in
                        connection.execute(open_writes, {"names": names})}
                connection.commit()
                if not seen:
                    continue
                os.killpg(pgid, signal.SIGSTOP)
                still = [(pid, xid) for pid, xid, _ in
                         connection.execute(open_writes, {"names": names})]
                connection.commit()
                caught = [key for key in still if key in seen]
                if caught:
                    return caught[0][0], " ".join(seen[caught[0]].split())[:80]
                os.killpg(pgid, signal.SIGCONT)  # it committed meanwhile: again
    finally:
        engine.dispose()
    raise AssertionError("never caught the worker inside a transaction in 60 s")


def test_a_worker_stopped_inside_its_transaction_never_blocks_the_others_claims(
        stack: Stack, tmp_path: Path) -> None:
    # Worker A is stopped (SIGSTOP) at a moment it holds row locks in an open transaction,
    # while B claims and writes the rest of the run. B's claims never wait on A's locks, and
    # A's session is ended (by PostgreSQL after db_idle_transaction_seconds, or by the sweep
    # that finds A dead) so that what takes A's items over never waits on them either.
    write_corpus(tmp_path / "corpus", 120)
    stack.simulator.configure(latency_ms=150, latency_sigma=0.1)
    stack.settings |= {"worker_concurrency": 4, "holder_timeout_seconds": 8,
                       "db_idle_transaction_seconds": 4}
    stack.start_workers(2)
    run_id = stack.ingest(tmp_path / "corpus")["run_id"]
    wait_until(lambda: stack.report(run_id).succeeded >= 8, timeout=60, what="8 successes")
    victim = stack.workers[0].process
    assert victim is not None
    waits = LockWaits(stack.database_url)
    backend, statement = _stop_inside_a_transaction(stack.database_url, victim.pid)
    stopped_at = time.monotonic()
    claimed_before = stack.report(run_id).succeeded
    try:
        def session_ended() -> bool:
            with session_scope(stack.database_url) as s:
                return s.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"),
                                {"pid": backend}) == 0

        wait_until(session_ended, timeout=30, what="PostgreSQL ending the stopped session")
        ended_after = time.monotonic() - stopped_at
        report = stack.wait_for(run_id, timeout=120)
        # While A is still stopped: once continued, it writes its late answers as attempts
        # (test_workers.py follows that), which a reading in between would see half done.
        assert_accounted_for(stack, run_id)
    finally:
        waits.stop()
        os.killpg(victim.pid, signal.SIGCONT)
    assert report.succeeded == 120 and report.failed == 0
    assert report.succeeded > claimed_before, "B went on while A was stopped"
    # Ended by PostgreSQL (4 s idle) or, at the latest, by the sweep that finds A dead (8 s):
    # its locks never outlive the holder timeout. (PostgreSQL ended it at 4.0 s in most runs;
    # in some under load it lived until the sweep, the cause not found yet.)
    assert ended_after < 8 + 5, (ended_after, statement)
    assert waits.samples > 10
    assert waits.claim < 0.5, f"a claim waited {waits.claim:.2f} s on a stopped worker's locks"
    assert waits.any < 4, f"{waits.waiter!r} waited {waits.any:.2f} s"
