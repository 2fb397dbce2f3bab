"""Results: stored once per (content, pipeline version, chunk), and the successes that
write them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    bindparam,
    cast,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.orm import Session

from workers.db.dialect import (
    BATCH,
    RESULT_ARRAYS,
    any_in,
    insert_for,
    is_postgres,
    table_of,
    unnest,
)
from workers.db.models import (
    Attempt,
    AttemptOutcome,
    Result,
    utcnow,
)
from workers.db.repository.attempts import AttemptRecord, move_to_spent, record_attempt
from workers.db.repository.item_queries import ClaimedItem
from workers.db.repository.items import Completion, complete_many


def find_result_id(session: Session, content_hash: str, version: str, chunk: int) -> int | None:
    """The id of the result for (content, pipeline version, chunk), if one exists."""
    return session.scalar(
        select(Result.id).where(
            Result.content_hash == content_hash,
            Result.pipeline_version == version,
            Result.chunk_index == chunk,
        )
    )


def hashes_with_results(session: Session, hashes: Sequence[str], version: str) -> set[str]:
    """Which of ``hashes`` already have a result for pipeline ``version``."""
    found: set[str] = set()
    for start in range(0, len(hashes), BATCH):
        found.update(session.scalars(select(Result.content_hash).where(
            Result.content_hash.in_(hashes[start : start + BATCH]),
            Result.pipeline_version == version, Result.chunk_index == 0)))
    return found


def save_result(session: Session, item: ClaimedItem, *, output: dict[str, Any], model: str,
                response_id: str | None) -> int:
    """Store the item's result (or find the one a racing worker stored) and complete it: the
    one-item form of what :func:`record_successes` writes after the attempts."""
    now = utcnow()
    result_id = _store_results(session, [NewResult(item, output, model, response_id)],
                               now=now)[item.id]
    complete_many(session, [Completion(item.id, result_id)], now=now)
    return result_id


@dataclass(frozen=True)
class NewResult:
    """An item's valid output, to store as the result of its (content, version, chunk)."""

    item: ClaimedItem
    output: dict[str, Any]
    model: str
    response_id: str | None


@dataclass(frozen=True)
class Success:
    """An answered call whose decision is success, for :func:`record_successes`."""

    item: ClaimedItem
    attempt: AttemptRecord
    output: dict[str, Any]
    response_id: str | None
    waited_ms: int = 0

    @property
    def result(self) -> NewResult:
        return NewResult(self.item, self.output, self.attempt.model, self.response_id)


def record_successes(session: Session, successes: Sequence[Success]) -> dict[int, int]:
    """The group form of :func:`record_attempt` then :func:`save_result`, for answers that
    succeeded: their attempt rows completed, their results stored (or the racing writer's
    found) and their items completed with their tallies, in a few statements however many
    there are. Returns each item's result id.
    """
    if not successes:
        return {}
    counted = _complete_attempts(session, successes)
    now = utcnow()
    result_ids = _store_results(session, [s.result for s in successes], now=now)
    # Complete the items, adding each call (unless counted one by one) and its wait.
    complete_many(session, [
        Completion(s.item.id, result_ids[s.item.id], calls=1 if s.item.id in counted else 0,
                   cost_usd=s.attempt.cost_usd if s.item.id in counted else Decimal(0),
                   waited_ms=s.waited_ms) for s in successes], now=now)
    return result_ids


def _complete_attempts(session: Session, successes: Sequence[Success]) -> set[int]:
    """Complete the in-flight rows in one executemany; returns the items whose call is still
    to be counted. A row closed as lost meanwhile (its lease ran out) takes the one-row path,
    which knows how to count it; the rows are locked first (SQLite: the transaction holds the
    write lock from its BEGIN)."""
    ids = [s.attempt.id for s in successes if s.attempt.id is not None]
    still = set(session.scalars(
        select(Attempt.id).where(any_in(session, Attempt.id, ids, BigInteger),
                                 Attempt.outcome == AttemptOutcome.IN_FLIGHT)
        .with_for_update())) if ids else set()
    fast = [s for s in successes if s.attempt.id in still]
    for s in successes:
        if s.attempt.id not in still:
            record_attempt(session, s.attempt)
    if fast:
        attempts = table_of(Attempt)
        columns = [k for k in vars(fast[0].attempt) if k != "id"]
        session.connection().execute(
            update(attempts).where(attempts.c.id == bindparam("_id"))
            .values({k: bindparam(f"_{k}") for k in columns}),
            [{"_id": s.attempt.id, **{f"_{k}": getattr(s.attempt, k) for k in columns}}
             for s in fast])
        _spend_reserves(session, [s.attempt for s in fast])
    return {s.item.id for s in fast}


def _spend_reserves(session: Session, attempts: Sequence[AttemptRecord]) -> None:
    """Move what these calls held against their runs' budgets to spent, per run."""
    held: dict[int, tuple[Decimal, Decimal]] = {}
    for attempt in attempts:
        if attempt.reserved_usd:
            released, spent = held.get(attempt.run_id, (Decimal(0), Decimal(0)))
            held[attempt.run_id] = (released + attempt.reserved_usd, spent + attempt.cost_usd)
    for run_id, (released, spent) in held.items():
        move_to_spent(session, run_id, released=released, spent=spent)


def _store_results(session: Session, results: Sequence[NewResult], *, now: datetime
                   ) -> dict[int, int]:
    """The results in one INSERT; the keys a racing writer stored first are looked up.
    Returns each item's result id."""
    def key(r: NewResult) -> tuple[str, str, int]:
        return (r.item.content_hash, r.item.pipeline_version, r.item.chunk_index)

    key_of = {key(r): r for r in results}
    if is_postgres(session):
        # One parameter per column (see attempts.begin_attempts): the outputs go as JSON text.
        unique = list(key_of.values())
        inserted = session.execute(_STORE_MANY, {
            "content_hash": [r.item.content_hash for r in unique],
            "pipeline_version": [r.item.pipeline_version for r in unique],
            "chunk_index": [r.item.chunk_index for r in unique],
            "pipeline": [r.item.pipeline for r in unique],
            "document_id": [r.item.document_id for r in unique],
            "item_id": [r.item.id for r in unique],
            "output": [json.dumps(r.output) for r in unique],
            "model": [r.model for r in unique],
            "response_id": [r.response_id for r in unique], "now": now}).all()
    else:
        inserted = _insert_results(session, list(key_of.values()), now=now)
    result_of = {(h, v, c): rid for rid, h, v, c in inserted}
    for missing in key_of.keys() - result_of.keys():
        found = find_result_id(session, *missing)
        assert found is not None  # the racing writer's
        result_of[missing] = found
    return {r.item.id: result_of[key(r)] for r in results}


_results = table_of(Result)
_KEY = ["content_hash", "pipeline_version", "chunk_index"]
_answers = unnest(RESULT_ARRAYS)
#: PostgreSQL's form of :func:`_store_results`' INSERT.
_STORE_MANY = postgres_insert(_results).from_select(
    [*(name for name, _ in RESULT_ARRAYS), "created_at"],
    select(*(cast(_answers.c[name], JSONB) if name == "output" else _answers.c[name]
             for name, _ in RESULT_ARRAYS),
           bindparam("now", type_=_results.c.created_at.type)),
).on_conflict_do_nothing(index_elements=_KEY).returning(
    _results.c.id, _results.c.content_hash, _results.c.pipeline_version,
    _results.c.chunk_index)


def _insert_results(session: Session, results: Sequence[NewResult], *, now: datetime
                    ) -> Sequence[Any]:
    return session.execute(
        insert_for(session, Result)
        .values([{"content_hash": r.item.content_hash,
                  "pipeline_version": r.item.pipeline_version,
                  "chunk_index": r.item.chunk_index, "pipeline": r.item.pipeline,
                  "document_id": r.item.document_id, "item_id": r.item.id,
                  "output": r.output, "model": r.model,
                  "response_id": r.response_id, "created_at": now}
                 for r in results])
        .on_conflict_do_nothing(index_elements=_KEY)
        .returning(Result.id, Result.content_hash, Result.pipeline_version,
                   Result.chunk_index)).all()
