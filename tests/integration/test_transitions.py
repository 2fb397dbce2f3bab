"""Each guarded write of ``Item.status``, from every state, on SQLite and PostgreSQL: it moves
an item exactly when the state machine's table says it may, and otherwise changes nothing."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tests.support.db import new_run
from workers.db import repository as repo
from workers.db import states
from workers.db.models import Batch, Document, Item, Result, utcnow
from workers.db.session import session_scope
from workers.db.states import ItemStatus as S


@dataclass(frozen=True)
class Subject:
    """One item of a running live run, put straight into a state, with what the writes need."""

    run_id: int
    item_id: int
    batch_id: int
    result_id: int


Write = Callable[[Session, Subject], Any]
LATER = timedelta(minutes=5)
_SERIAL = itertools.count()


def _error(**extra: Any) -> dict[str, Any]:
    return {"error_class": "server", "code": "x", "message": "m"} | extra


#: Every guarded function, by the transition it makes.
WRITES: dict[str, tuple[states.Transition, Write]] = {
    "mark_queued": (states.QUEUE, lambda s, x: repo.mark_queued(s, [x.item_id])),
    "touch_queued": (states.RESEND, lambda s, x: repo.touch_queued(s, [x.item_id])),
    "mark_requeued": (states.REQUEUE, lambda s, x: repo.mark_requeued(s, [x.item_id])),
    "claim_item": (states.CLAIM, lambda s, x: repo.claim_item(s, x.item_id, lease_seconds=60,
                                                              holder="test")),
    "void_dead_claims": (states.VOID_DEAD,
                         lambda s, x: repo.void_dead_claims(s, [x.item_id])),
    "unblock_parent": (states.UNBLOCK, lambda s, x: repo.unblock_parent(s, x.item_id)),
    "reuse_result": (states.SUCCEED, lambda s, x: repo.reuse_result(s, x.item_id, x.result_id)),
    "complete_many": (states.SUCCEED, lambda s, x: repo.items.complete_many(
        s, [repo.items.Completion(x.item_id, x.result_id)], now=utcnow())),
    "schedule_retry": (states.RETRY, lambda s, x: repo.schedule_retry(
        s, x.item_id, not_before=utcnow() + LATER, **_error())),
    "park_item": (states.PARK, lambda s, x: repo.park_item(
        s, x.item_id, not_before=utcnow() + LATER)),
    "release_item": (states.RELEASE, lambda s, x: repo.release_item(s, x.item_id, **_error())),
    "release_after_error": (states.RELEASE_AFTER_ERROR, lambda s, x: repo.release_after_error(
        s, x.item_id, retry_at=utcnow() + LATER, **_error())),
    "release_after_error(failed)": (
        states.RELEASE_AFTER_ERROR_FAILED,
        lambda s, x: repo.release_after_error(s, x.item_id, retry_at=None, **_error())),
    "fail_item": (states.FAIL, lambda s, x: repo.fail_item(s, x.item_id, **_error())),
    "cancel_unsent": (states.CANCEL, lambda s, x: repo.items.cancel_unsent(s, x.run_id)),
    "reset_for_replay": (states.REPLAY, lambda s, x: repo.items.reset_for_replay(
        s, x.run_id, sorted(S))),
    "move_into_batch": (states.BATCH, lambda s, x: repo.items.move_into_batch(
        s, x.batch_id, [x.item_id])),
    "unbatch_all": (states.UNBATCH, lambda s, x: repo.items.unbatch_all(s, x.batch_id)),
    "return_to_batching": (states.UNBATCH, lambda s, x: repo.return_to_batching(
        s, x.item_id, **_error())),
    "send_live": (states.SEND_LIVE, lambda s, x: repo.send_live(s, x.item_id, **_error())),
}


def test_every_transition_has_a_write_under_test() -> None:
    assert {t for t, _ in WRITES.values()} == set(states.TRANSITIONS)


def _subject(status: S) -> Subject:
    """An item in ``status`` whose other columns let every write from that state proceed: a
    lease that has run out, nothing to wait for, a batch it sits in, a result to point at."""
    run_id, [item_id] = new_run([f"document {next(_SERIAL)}, to put in {status}"])
    with session_scope() as s:
        batch = Batch(run_id=run_id, status="in_progress", items=1, input_bytes=1)
        s.add(batch)
        document_id = s.scalar(select(Item.document_id).where(Item.id == item_id))
        document = s.get(Document, document_id)
        assert document is not None
        result = Result(content_hash=document.content_hash, pipeline_version="v1",
                        pipeline="summarise", document_id=document.id, item_id=item_id,
                        output={"summary": "s"}, model="gpt-4.1-mini")
        s.add(result)
        s.flush()
        s.execute(update(Item).where(Item.id == item_id).values(
            status=status, lease_expires_at=utcnow() - LATER, not_before=None,
            batch_id=batch.id if status == S.BATCHED else None))
        return Subject(run_id, item_id, batch.id, result.id)


def _status(item_id: int) -> str:
    with session_scope() as s:
        status = s.scalar(select(Item.status).where(Item.id == item_id))
    assert status is not None
    return status


@pytest.mark.parametrize("write", sorted(WRITES))
def test_a_write_moves_an_item_only_from_the_states_its_transition_allows(
        migrated_db: str, write: str) -> None:
    transition, apply = WRITES[write]
    subjects = {status: _subject(status) for status in S}
    for subject in subjects.values():
        with session_scope() as s:
            apply(s, subject)
    found = {status: _status(subject.item_id) for status, subject in subjects.items()}
    assert found == {status: transition.target if transition.allows(status) else status
                     for status in S}


def test_a_late_error_never_undoes_a_success(migrated_db: str) -> None:
    subject = _subject(S.SUCCEEDED)
    for write in ("fail_item", "release_after_error", "release_after_error(failed)",
                  "schedule_retry", "park_item", "release_item", "cancel_unsent"):
        with session_scope() as s:
            WRITES[write][1](s, subject)
        assert _status(subject.item_id) == S.SUCCEEDED, write


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(states.INITIAL)), st.lists(st.sampled_from(sorted(WRITES)),
                                                         min_size=1, max_size=12))
def test_any_sequence_of_writes_follows_the_table(migrated_db: str, start: S,
                                                  writes: list[str]) -> None:
    """The table is the invariant: whatever the order, each write leaves the item where it
    was or moves it to its transition's target, and only from a state the table allows.
    (Whether it moves also depends on the row: a retry not yet due is not claimed.)"""
    subject = _subject(start)
    status = _status(subject.item_id)
    for write in writes:
        transition, apply = WRITES[write]
        with session_scope() as s:
            apply(s, subject)
        after = _status(subject.item_id)
        assert after == status or (transition.allows(status) and after == transition.target), (
            write, status, after)
        status = after
