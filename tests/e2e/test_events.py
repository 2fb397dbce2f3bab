"""What Flower shows is true: a task whose item failed is a failed task, with its item and code.

Flower builds its view from Celery's events with ``celery.events.state.State``; this test
builds the same state from the same events, sent by real workers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.events.state import State
from kombu import Connection
from sqlalchemy import select

from tests.support.corpus import write_corpus
from tests.support.stack import Stack
from tests.support.waiting import wait_until
from workers.db.models import Item
from workers.db.session import session_scope

pytestmark = pytest.mark.e2e


class Events:
    """Celery's events as a receiver on the stack's broker got them."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []  # appended by the receiver, read by the test

    def __call__(self) -> State:
        """The event state as Flower would hold it."""
        built = State()
        for event in list(self.seen):
            built.event(event)
        return built


@pytest.fixture
def events(stack: Stack) -> Iterator[Events]:
    """Celery's event state as Flower would hold it, from a receiver on the stack's broker."""
    state = Events()
    app = Celery(broker=stack.broker_url)
    connection = Connection(stack.broker_url)
    receiver = app.events.Receiver(connection, handlers={"*": state.seen.append})
    # One capture for the whole test, as Flower holds one: each capture() subscribes to the
    # events afresh and unsubscribes when it returns, and an event published between two
    # is lost (Redis pub/sub keeps nothing for an absent subscriber).
    thread = threading.Thread(target=receiver.capture, daemon=True)
    thread.start()
    yield state
    receiver.should_stop = True  # seen within the consumer's one-second drain
    thread.join(timeout=10)
    connection.release()


def run_refused(stack: Stack, events: Events, tmp_path: Path, *, documents: int) -> Any:
    """A run of ``documents`` whose every call the API refuses (a 400 for each document's
    own input: one for the pipeline's request would pause the run instead), to its end."""
    write_corpus(tmp_path / "corpus", documents)
    stack.simulator.configure(force_error={"status": 400, "code": "context_length_exceeded",
                                           "type": "invalid_request_error", "param": "input",
                                           "message": "simulated 400"})
    stack.start_workers(1)
    # The worker's own events arrive only once the receiver is bound: no task is missed.
    wait_until(lambda: any(w.alive for w in events().workers.values()), timeout=60,
               what="the worker's events to reach the receiver")
    return stack.wait_for(stack.ingest(tmp_path / "corpus")["run_id"], timeout=60)


def test_a_failed_item_is_a_failed_task_in_celerys_events(stack: Stack, events: Events,
                                                          tmp_path: Path) -> None:
    stack.settings |= {"group_size": 1}  # one task per item
    report = run_refused(stack, events, tmp_path, documents=3)
    assert report.failed == 3

    def processed() -> list[object]:
        done = [t for t in events().tasks.values()
                if t.name == "docpipe.items.process" and t.state in ("SUCCESS", "FAILURE")]
        return done if len(done) >= 3 else []

    tasks = wait_until(processed, timeout=30, what="three processed tasks in the events")
    with session_scope(stack.database_url) as session:
        item_ids = set(session.scalars(select(Item.id).where(Item.run_id == report.run_id)))
    assert {t.state for t in tasks} == {"FAILURE"}  # type: ignore[attr-defined]
    for task in tasks:
        item_id = int(str(task.args).strip("[](),"))  # type: ignore[attr-defined]
        assert item_id in item_ids
        assert f"item failed: {item_id} (context_length_exceeded)" in str(
            task.exception)  # type: ignore[attr-defined]
    # An expected failure: one line in the worker's log, no traceback.
    assert "Traceback" not in stack.workers[0].log()


def test_a_group_whose_items_failed_is_one_failed_task_naming_each(
        stack: Stack, events: Events, tmp_path: Path) -> None:
    report = run_refused(stack, events, tmp_path, documents=5)
    assert report.failed == 5

    def processed() -> list[Any]:
        return [t for t in events().tasks.values()
                if t.name == "docpipe.items.process" and t.state == "FAILURE"]

    (task,) = wait_until(processed, timeout=30, what="the group's failed task")
    with session_scope(stack.database_url) as session:
        item_ids = sorted(session.scalars(select(Item.id).where(Item.run_id == report.run_id)))
    carried = sorted(int(v) for v in str(task.args).strip("[](),").split(",") if v.strip())
    assert carried == item_ids, "its args show the item ids it carried"
    for item_id in item_ids:
        assert f"{item_id} (context_length_exceeded)" in str(task.exception)


def test_a_task_returned_before_its_answers_succeeds_once_when_they_are_written(
        stack: Stack, events: Events, tmp_path: Path) -> None:
    # The task returns once its calls are out; the worker sends no task-succeeded then (a
    # success would outrank the failure its answers may still bring). Its writer sends the
    # one task-succeeded, with the items' statuses, once they are written.
    stack.simulator.configure(latency_ms=300, latency_sigma=0.0)
    write_corpus(tmp_path / "corpus", 4)
    stack.start_workers(1)
    wait_until(lambda: any(w.alive for w in events().workers.values()), timeout=60,
               what="the worker's events to reach the receiver")
    report = stack.wait_for(stack.ingest(tmp_path / "corpus")["run_id"], timeout=60)
    assert report.succeeded == 4

    def succeeded() -> list[dict[str, Any]]:
        return [e for e in list(events.seen) if e.get("type") == "task-succeeded"]

    (event,) = wait_until(succeeded, timeout=30, what="the group's task-succeeded")
    assert event["result"] == repr("succeeded")
    (task,) = [t for t in events().tasks.values() if t.name == "docpipe.items.process"]
    assert task.state == "SUCCESS" and task.uuid == event["uuid"]
    assert len(succeeded()) == 1, "no task-succeeded when the task returned"
