"""Worker processes killed or stopped in the middle of a run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from celery import Celery
from sqlalchemy import select

from tests.support.accounting import assert_accounted_for
from tests.support.corpus import input_keys, write_corpus
from tests.support.services import WorkerProcess
from tests.support.stack import Stack
from tests.support.waiting import wait_until
from workers.db.models import Item, ItemStatus
from workers.db.models import WorkerProcess as HolderRow
from workers.db.session import session_scope
from workers.settings import Settings


def item_ids(stack: Stack, run_id: int, status: str) -> list[int]:
    with session_scope(stack.database_url) as s:
        return list(s.scalars(select(Item.id).where(Item.run_id == run_id,
                                                    Item.status == status)))


def test_kill_9_of_the_whole_worker_mid_run_then_a_restart(stack: Stack, tmp_path: Path
                                                           ) -> None:
    write_corpus(tmp_path / "corpus", 60)
    stack.simulator.configure(latency_ms=400, latency_sigma=0.1)
    stack.settings |= {"worker_concurrency": 8}
    stack.start_workers(1)
    run_id = stack.ingest(tmp_path / "corpus")["run_id"]
    wait_until(lambda: stack.report(run_id).succeeded >= 10, timeout=60, what="10 successes")

    stack.workers[0].kill()
    done_before = item_ids(stack, run_id, ItemStatus.SUCCEEDED)
    in_flight = item_ids(stack, run_id, ItemStatus.RUNNING)
    assert in_flight, "the kill should have caught calls in flight"

    # The faults' short lease (6 s) expires long before the 30 s holder timeout: this is the
    # backstop path, for a holder the sweep cannot judge. The killed worker's messages sit in
    # Redis's unacked set until the visibility timeout; the reconciler does not wait for
    # them: it re-sends items whose lease expired. The default timings' path (the sweep) is
    # the next test's.
    stack.workers.clear()
    stack.start_workers(1, beat=True)
    report = stack.wait_for(run_id, timeout=90)
    assert report.succeeded == 60 and report.failed == 0
    assert_accounted_for(stack, run_id)

    # Nothing finished before the kill was paid for again.
    paid = stack.simulator.stats()["ok_by_input"]
    assert all(paid[key] == 1 for key in input_keys(stack, done_before, "summarise").values())


def fifteen_calls_in_flight(stack: Stack, tmp_path: Path) -> int:
    """One worker with the default timings (not the faults' short ones) and 16 documents,
    all in one message; returns the run once 15 of its calls are out at once (the first call
    probes the endpoint's rate limit alone, then the other 15 go together, 3 s each)."""
    write_corpus(tmp_path / "corpus", 16)
    stack.simulator.configure(latency_ms=3000, latency_sigma=0.05)
    stack.settings = {"worker_concurrency": 16}
    stack.start_workers(1)
    run_id: int = stack.ingest(tmp_path / "corpus")["run_id"]
    wait_until(lambda: len(item_ids(stack, run_id, ItemStatus.RUNNING)) == 15
               and stack.simulator.stats()["counters"].get("requests", 0) == 16,
               timeout=60, what="15 calls in flight")
    return run_id


def test_kill_9_without_beat_is_noticed_by_the_other_worker_in_seconds(
        stack: Stack, tmp_path: Path) -> None:
    # The default timings (a 600 s lease, a 3,600 s visibility timeout, 5 s heartbeats, a 30 s
    # holder timeout) and no beat: nothing but the surviving worker's own sweep can send the
    # killed worker's items again. The victim holds the run's one message of 16 items, all
    # claimed, so no message of the run is left unclaimed in its prefetch.
    run_id = fifteen_calls_in_flight(stack, tmp_path)
    timeout = Settings().holder_timeout_seconds
    victim = stack.workers[0]
    assert victim.process is not None
    pid = victim.process.pid
    victim.kill()
    killed_at = time.monotonic()
    # Lost once, the victim's items go in groups again (only an item's last chance before
    # quarantine runs alone): their 3 s calls are made together.
    stack.start_workers(1)
    with session_scope(stack.database_url) as s:
        tokens = set(s.scalars(select(HolderRow.id).where(HolderRow.pid == pid)))
        held = set(s.scalars(select(Item.id).where(Item.run_id == run_id,
                                                   Item.status == ItemStatus.RUNNING,
                                                   Item.holder.in_(tokens))))
    assert tokens and len(held) == 15, (tokens, held)

    report = stack.wait_for(run_id, timeout=timeout + 60)
    ended = time.monotonic() - killed_at
    assert report.succeeded == 16 and report.failed == 0
    # The survivor judges others once it has beaten for a whole timeout itself, then at its
    # next beat: about the timeout after the kill, plus a beat and one 3 s call's time.
    assert ended < timeout + 20, f"the run ended {ended:.0f} s after the kill"
    assert_accounted_for(stack, run_id)
    with session_scope(stack.database_url) as s:
        # Each of the victim's items counted one lost worker; its holder row is gone.
        assert set(s.scalars(select(Item.worker_losses).where(Item.id.in_(held)))) == {1}
        assert not s.scalars(select(HolderRow).where(HolderRow.id.in_(tokens))).all()


def test_a_stopped_worker_taken_over_keeps_its_late_answers_as_attempts_only(
        stack: Stack, tmp_path: Path) -> None:
    # The default timings, no beat. Worker A is stopped (SIGSTOP) with 15 calls in flight;
    # B finds it dead, takes its items over and finishes the run. Then A is continued: the
    # answers it paid for are recorded as attempts, and nothing else changes.
    run_id = fifteen_calls_in_flight(stack, tmp_path)
    timeout = Settings().holder_timeout_seconds
    paused = stack.workers[0]
    assert paused.process is not None
    os.killpg(paused.process.pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        stack.simulator.configure(latency_ms=100)
        stack.start_workers(1)
        report = stack.wait_for(run_id, timeout=timeout + 60)
        ended = time.monotonic() - stopped_at
    finally:
        os.killpg(paused.process.pid, signal.SIGCONT)
    assert report.succeeded == 16 and ended < timeout + 30, ended
    with session_scope(stack.database_url) as s:
        results = dict(s.execute(select(Item.id, Item.result_id).where(Item.run_id == run_id))
                       .all())
    # A wakes up and writes what became of its 15 calls as attempts only (the simulator
    # answered them meanwhile, but the stop outlasted the request timeout, so the client saw
    # timeouts): 15 + 16 calls in all, each on record, none left lost or in flight.
    def late_calls_recorded() -> bool:
        outcomes = stack.report(run_id).attempts_by_outcome
        return sum(outcomes.values()) == 31 and not {"lost", "in_flight"} & set(outcomes)

    wait_until(late_calls_recorded, timeout=30, what="A's late calls recorded")
    assert stack.simulator.stats()["counters"]["requests"] == 31
    assert_accounted_for(stack, run_id)
    with session_scope(stack.database_url) as s:
        # The results B wrote stand; A wrote none and moved no item.
        assert dict(s.execute(select(Item.id, Item.result_id)
                              .where(Item.run_id == run_id)).all()) == results
        assert set(s.scalars(select(Item.worker_losses).where(Item.run_id == run_id))) == {0, 1}
    assert "its answer is kept as an attempt only" in paused.log()
    # A beats again, under the same token: its row was removed as dead and is written anew.
    wait_until(lambda: "heartbeat row" in paused.log(), timeout=30, what="A's next beat")


def test_sigterm_hands_back_prefetched_messages_at_once(stack: Stack, tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus", 30)
    stack.simulator.configure(latency_ms=300, latency_sigma=0.1)
    # A long visibility timeout, so that finishing well inside it proves the messages came
    # back at once rather than through Redis's sweep.
    stack.settings |= {"worker_concurrency": 2, "visibility_timeout_seconds": 60}
    stack.start_workers(1)
    run_id = stack.ingest(tmp_path / "corpus")["run_id"]
    wait_until(lambda: stack.report(run_id).succeeded >= 4, timeout=60, what="4 successes")

    stack.workers[0].terminate()  # warm shutdown: running calls finish, the rest go back
    assert not item_ids(stack, run_id, ItemStatus.RUNNING)
    stack.workers.clear()

    # No beat, no reconciler: the returned messages alone must finish the run, long before
    # the visibility timeout (60 s) would have brought them back.
    started = time.monotonic()
    stack.start_workers(1)
    report = stack.wait_for(run_id, timeout=60)
    assert report.succeeded == 30 and report.failed == 0
    assert time.monotonic() - started < 40
    assert_accounted_for(stack, run_id)


def assert_finishes_after_one_restart(stack: Stack, corpus: Path,
                                      process: subprocess.Popen[bytes], documents: int, *,
                                      because: str) -> None:
    """The run finishes, in the same process, restarted in place exactly once."""
    run_id = stack.ingest(corpus)["run_id"]
    assert stack.wait_for(run_id, timeout=90).succeeded == documents
    assert process.poll() is None, "restarted in place: the same process, not a new one"
    log = stack.workers[0].log()
    assert because in log
    assert len(re.findall(r"w0@\S+ ready\.", log)) == 2, "exactly one restart"
    assert_accounted_for(stack, run_id)


def test_a_worker_that_stops_consuming_restarts_itself(stack: Stack, tmp_path: Path) -> None:
    # The symptom of Celery's reconnect bugs, made on purpose: the worker stays up but no
    # longer consumes its queue. Its liveness check must notice and restart it in place.
    write_corpus(tmp_path / "corpus", 15)
    stack.settings |= {"worker_liveness_seconds": 3}
    stack.start_workers(1)
    process = stack.workers[0].process
    assert process is not None
    control = Celery(broker=stack.broker_url)
    wait_until(lambda: bool(control.control.ping(timeout=1)), timeout=30, what="the worker")
    replies = control.control.cancel_consumer("docpipe.live", reply=True, timeout=5)
    assert replies, "the worker should confirm it stopped consuming"

    assert_finishes_after_one_restart(stack, tmp_path / "corpus", process, 15,
                                      because="this worker stopped consuming")


def test_a_worker_celery_gives_up_on_restarts_itself(stack: Stack, tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus", 10)
    root = str(Path(__file__).resolve().parents[2])  # so the worker can import tests.support
    worker = WorkerProcess("w0", stack.env | {"PYTHONPATH": root}, tmp_path / "worker0.log",
                           extra=("-I", "tests.support.gives_up"))
    worker.start()
    stack.workers.append(worker)
    process = worker.process
    assert process is not None
    wait_until(lambda: "gave up (exit code 1)" in stack.workers[0].log(), timeout=60,
               what="the worker to notice it was given up on")
    # Sent once it is back: the make-believe crash leaves the old consumer consuming until
    # the exec, and what it fetched in its last second would wait for the visibility timeout.
    wait_until(lambda: len(re.findall(r"w0@\S+ ready\.", stack.workers[0].log())) == 2,
               timeout=60, what="the worker to restart in place")
    assert_finishes_after_one_restart(stack, tmp_path / "corpus", process, 10,
                                      because="restarting it in place in 1 s")
