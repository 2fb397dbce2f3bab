"""The broker forgets, repeats or is fed something it must refuse."""

from __future__ import annotations

import json
import pickle
import subprocess
import time
import uuid
from pathlib import Path

import redis
from kombu import Connection
from sqlalchemy import func, select

from pipelines import get_pipeline
from tests.support.accounting import assert_accounted_for
from tests.support.corpus import write_corpus
from tests.support.services import docpipe_argv
from tests.support.stack import Stack
from tests.support.waiting import wait_until
from workers.db.models import Attempt, Item, Result
from workers.db.session import session_scope
from workers.runtime.tasks import process_group
from workers.simulator import input_key


def test_flushall_mid_run_then_the_reconciler(stack: Stack, tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus", 40)
    stack.simulator.configure(latency_ms=300, latency_sigma=0.1)
    stack.settings |= {"worker_concurrency": 4}
    stack.start_workers(1, beat=True)
    run_id = stack.ingest(tmp_path / "corpus")["run_id"]
    wait_until(lambda: stack.report(run_id).succeeded >= 5, timeout=60, what="5 successes")

    redis.Redis.from_url(stack.broker_url).flushall()  # the queue, unacked, limiter: gone
    # The database still knows which items are unfinished; beat's reconciler re-sends those
    # whose message is older than the visibility timeout (12 s here).
    report = stack.wait_for(run_id, timeout=90)
    assert report.succeeded == 40 and report.failed == 0
    assert_accounted_for(stack, run_id)


def test_the_same_document_five_times_and_a_message_replayed_by_hand(
        stack: Stack, tmp_path: Path) -> None:
    text = "Initech Ltd owes Globex Corporation $4,200.00 under invoice 7731, due 1 June 2025."
    (tmp_path / "invoice.txt").write_text(text)
    stack.start_workers(1)
    runs = [stack.ingest(tmp_path / "invoice.txt")["run_id"] for _ in range(5)]
    for run_id in runs:
        assert stack.wait_for(run_id).succeeded == 1
        assert_accounted_for(stack, run_id)
    key = input_key(get_pipeline("summarise").request(text))
    paid = stack.simulator.stats()["ok_by_input"][key]
    with session_scope(stack.database_url) as s:
        assert s.scalar(select(func.count()).select_from(Result)) == 1
        # A call made by a racing duplicate shows as cost (an attempt), never as a result.
        assert s.scalar(select(func.count()).select_from(Attempt)
                        .where(Attempt.outcome == "ok")) == paid
        first_item = s.scalar(select(Item.id).where(Item.run_id == runs[0]))
    assert first_item is not None

    # A message delivered again, long after the item succeeded.
    with Connection(stack.broker_url) as conn:
        process_group.apply_async((first_item,), connection=conn, queue="docpipe.live",
                                 routing_key="docpipe.live")
    wait_until(lambda: redis.Redis.from_url(stack.broker_url).llen("docpipe.live") == 0,
               timeout=30, what="the replayed message to be consumed")
    time.sleep(1)
    assert stack.simulator.stats()["ok_by_input"][key] == paid
    assert_accounted_for(stack, runs[0])


def test_concurrent_replays_reprocess_each_item_once(stack: Stack, tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus", 20)
    stack.simulator.configure(force_error={"status": 400, "code": "invalid_value",
                                           "message": "simulated bad request"})
    stack.start_workers(1)
    run_id = stack.ingest(tmp_path / "corpus")["run_id"]
    assert stack.wait_for(run_id).failed == 20
    stack.simulator.configure(force_error=None)

    replays = [subprocess.Popen(docpipe_argv("replay", str(run_id), "--json"), env=stack.env,
                                stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=60)[0] for p in replays]
    replayed = sorted(json.loads(out)["replayed"] for out in outputs)
    assert sum(replayed) == 20, replayed  # each failed item was taken by exactly one replay
    report = stack.wait_for(run_id, timeout=60)
    assert report.succeeded == 20
    calls = stack.simulator.stats()["calls_by_input"]
    assert sorted(set(calls.values())) == [2]  # the failed call, then exactly one more
    assert_accounted_for(stack, run_id)


class _Canary:
    """Unpickling this creates a file: proof that a worker deserialized pickle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def test_a_pickled_message_is_refused(stack: Stack, tmp_path: Path) -> None:
    canary = tmp_path / f"unpickled-{uuid.uuid4().hex}"
    body = pickle.dumps(((_Canary(canary),), {}, {}))
    stack.start_workers(1)
    with Connection(stack.broker_url) as conn:
        conn.Producer().publish(
            body, routing_key="docpipe.live", content_type="application/x-python-serialize",
            content_encoding="binary",
            headers={"lang": "py", "task": "docpipe.items.process", "id": str(uuid.uuid4()),
                     "argsrepr": "(canary,)", "kwargsrepr": "{}"},
        )
    client = redis.Redis.from_url(stack.broker_url)
    wait_until(lambda: client.llen("docpipe.live") == 0, timeout=30,
               what="the worker to take the message")
    wait_until(lambda: "ContentDisallowed" in stack.workers[0].log()
               or "Refusing to deserialize" in stack.workers[0].log(),
               timeout=30, what="the worker to refuse the pickled message")
    time.sleep(1)
    assert not canary.exists()
    assert client.hlen("unacked") == 0  # refused and dropped, not left to come back
