"""Attempts: one row per call, written before it and completed after it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    String,
    bindparam,
    delete,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.orm import Session

from workers.db.dialect import (
    ATTEMPT_ARRAYS,
    MONEY_EPSILON,
    insert_for,
    is_postgres,
    table_of,
    unnest,
)
from workers.db.models import (
    Attempt,
    AttemptOutcome,
    Item,
    Run,
    utcnow,
)

#: Why an attempt is ``lost`` when its process left no reason of its own.
LOST_MESSAGE = ("the worker was lost during this call (killed, out of memory or past its time "
                "limit) before it recorded the answer: usage unknown, the API may have "
                "charged for it")


def begin_attempt(session: Session, *, item_id: int, run_id: int, model: str, worker: str,
                  reserve_usd: Decimal | None = None) -> int | None:
    """:func:`begin_attempts` for one call."""
    (attempt_id,) = begin_attempts(session, [NewAttempt(item_id, run_id, model, reserve_usd)],
                                   worker=worker)
    return attempt_id


@dataclass(frozen=True)
class NewAttempt:
    """A call about to be made, for :func:`begin_attempts`."""

    item_id: int
    run_id: int
    model: str
    #: Its worst-case cost, to hold against its run's budget first (None: no budget).
    reserve_usd: Decimal | None = None


_attempts = table_of(Attempt)
_calls = unnest(ATTEMPT_ARRAYS)
#: PostgreSQL's form of :func:`begin_attempts`' INSERT.
_BEGIN_MANY = postgres_insert(_attempts).from_select(
    ["item_id", "run_id", "model", "worker", "outcome", "started_at", "latency_ms",
     "reserved_usd"],
    select(_calls.c.item_id, _calls.c.run_id, _calls.c.model,
           bindparam("worker", type_=String), bindparam("outcome", type_=String),
           bindparam("now", type_=_attempts.c.started_at.type), literal(0),
           _calls.c.reserved_usd),
).returning(_attempts.c.id, _attempts.c.item_id)


def begin_attempts(session: Session, calls: Sequence[NewAttempt], *, worker: str
                   ) -> list[int | None]:
    """Record calls about to be made (``in_flight``) in one INSERT; return their ids in order.

    Written before the requests, so a call whose process dies is still on record. A call
    with a ``reserve_usd`` (a run with a budget) first holds its worst-case cost against the
    budget in one conditional update, so racing workers never overspend it together; its id
    is None when the budget has no room for it, and nothing is written for it.
    """
    wanted, calls = calls, [c for c in calls if c.reserve_usd is None or _hold(session, c)]
    if not calls:
        return [None] * len(wanted)
    now = utcnow()
    if is_postgres(session):
        # One parameter per column however many calls: a VALUES list of a group's rows
        # is a new, long query text that psycopg parses again at every call.
        inserted = session.execute(_BEGIN_MANY, {
            "item_id": [c.item_id for c in calls], "run_id": [c.run_id for c in calls],
            "model": [c.model for c in calls],
            "reserved_usd": [c.reserve_usd or Decimal(0) for c in calls], "worker": worker,
            "outcome": AttemptOutcome.IN_FLIGHT.value, "now": now}).all()
    else:
        rows = [{"item_id": c.item_id, "run_id": c.run_id, "model": c.model, "worker": worker,
                 "outcome": AttemptOutcome.IN_FLIGHT, "started_at": now, "latency_ms": 0,
                 "reserved_usd": c.reserve_usd or Decimal(0)} for c in calls]
        inserted = session.execute(insert_for(session, Attempt).values(rows)
                                   .returning(Attempt.id, Attempt.item_id)).all()
    by_item = {item_id: int(attempt_id) for attempt_id, item_id in inserted}
    return [by_item.get(c.item_id) for c in wanted]


def _hold(session: Session, call: NewAttempt) -> bool:
    """Hold a call's worst case against its run's budget, if the budget has room."""
    held = session.execute(
        update(Run)
        .where(Run.id == call.run_id, Run.budget_usd.is_not(None),
               # Within the columns' precision: SQLite stores these as floats.
               Run.spent_usd + Run.reserved_usd + call.reserve_usd
               <= Run.budget_usd + MONEY_EPSILON)
        .values(reserved_usd=Run.reserved_usd + call.reserve_usd)
        .execution_options(synchronize_session=False))
    return bool(held.rowcount)  # type: ignore[attr-defined]


def drop_attempt(session: Session, attempt_id: int) -> None:
    """Delete an ``in_flight`` row whose call was never sent (a 429 voided its slot first),
    releasing what it held against the budget: one attempt row per HTTP call."""
    dropped = session.execute(
        delete(Attempt).where(Attempt.id == attempt_id,
                              Attempt.outcome == AttemptOutcome.IN_FLIGHT)
        .returning(Attempt.run_id, Attempt.reserved_usd)
        .execution_options(synchronize_session=False)).first()
    if dropped is not None and dropped[1]:
        move_to_spent(session, dropped[0], released=dropped[1], spent=Decimal(0))


def move_to_spent(session: Session, run_id: int, *, released: Decimal, spent: Decimal) -> None:
    session.execute(
        update(Run).where(Run.id == run_id)
        .values(reserved_usd=Run.reserved_usd - released, spent_usd=Run.spent_usd + spent)
        .execution_options(synchronize_session=False))


def close_lost_attempts(session: Session, item_id: int, *, attempt_id: int | None = None,
                        code: str = "worker_lost", message: str = LOST_MESSAGE) -> int:
    """Mark the item's in-flight attempts (or just ``attempt_id``) lost; return how many."""
    stmt = update(Attempt).where(Attempt.item_id == item_id,
                                 Attempt.outcome == AttemptOutcome.IN_FLIGHT)
    if attempt_id is not None:
        stmt = stmt.where(Attempt.id == attempt_id)
    closed = session.execute(
        stmt.values(outcome=AttemptOutcome.LOST, error_code=code, error_message=message)
        .returning(Attempt.run_id, Attempt.reserved_usd)
        .execution_options(synchronize_session=False)).all()
    for run_id, reserved in closed:
        if reserved:
            # The API may have charged for it: count its worst case as spent.
            move_to_spent(session, run_id, released=reserved, spent=reserved)
    if closed:
        count_calls(session, item_id, calls=len(closed))
    return len(closed)


def count_calls(session: Session, item_id: int, *, calls: int, cost: Decimal = Decimal(0)
                 ) -> None:
    """Add finished attempt rows and their cost to the item's own tally (``Item.calls``)."""
    session.execute(update(Item).where(Item.id == item_id)
                    .values(calls=Item.calls + calls, cost_usd=Item.cost_usd + cost)
                    .execution_options(synchronize_session=False))


def last_lost_attempt(session: Session, item_id: int) -> tuple[str, str] | None:
    """(code, message) of the item's most recent lost call, if any."""
    row = session.execute(
        select(Attempt.error_code, Attempt.error_message)
        .where(Attempt.item_id == item_id, Attempt.outcome == AttemptOutcome.LOST)
        .order_by(Attempt.id.desc()).limit(1)).first()
    return (row[0] or "", row[1] or "") if row is not None else None


def output_tokens_seen(session: Session, version: str) -> tuple[float, int]:
    """Mean output tokens of successful calls made for pipeline ``version``, and how many."""
    mean, count = session.execute(
        select(func.avg(Attempt.output_tokens), func.count(Attempt.id))
        .join(Run, Run.id == Attempt.run_id)
        .where(Run.pipeline_version == version, Attempt.outcome == AttemptOutcome.OK)).one()
    return float(mean or 0), int(count)


@dataclass(frozen=True)
class AttemptRecord:
    """One HTTP call, as stored in ``attempts``."""

    item_id: int
    run_id: int
    model: str
    outcome: str
    started_at: datetime
    latency_ms: int
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    request_id: str | None = None
    response_id: str | None = None
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal = field(default_factory=Decimal)
    worker: str | None = None
    #: Answered by docpipe's simulator, not a model.
    simulated: bool = False
    #: What :func:`begin_attempt` held against the run's budget for this call.
    reserved_usd: Decimal = field(default_factory=Decimal)
    #: The ``in_flight`` row from :func:`begin_attempt` to complete; None: a new row.
    id: int | None = None


def record_attempt(session: Session, attempt: AttemptRecord) -> None:
    """Store one call's outcome and usage, completing its in-flight row if it has one."""
    values = {k: v for k, v in vars(attempt).items() if k != "id"}
    if attempt.id is None:
        session.execute(insert_for(session, Attempt).values(values))
        count_calls(session, attempt.item_id, calls=1, cost=attempt.cost_usd)
        return
    completed = session.execute(
        update(Attempt).where(Attempt.id == attempt.id,
                              Attempt.outcome == AttemptOutcome.IN_FLIGHT)
        .values(values).execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
    if not completed:  # closed as lost meanwhile (its lease ran out): the answer came after all
        session.execute(update(Attempt).where(Attempt.id == attempt.id).values(values)
                        .execution_options(synchronize_session=False))
    # A row closed as lost was counted then; its cost arrives only now.
    count_calls(session, attempt.item_id, calls=1 if completed else 0, cost=attempt.cost_usd)
    if attempt.reserved_usd:
        # The reservation becomes the real cost. If the call was closed as lost, its worst
        # case was already counted as spent: replace that with the real cost.
        move_to_spent(session, attempt.run_id,
                       released=attempt.reserved_usd if completed else Decimal(0),
                       spent=attempt.cost_usd - (Decimal(0) if completed
                                                 else attempt.reserved_usd))


def count_attempts(session: Session, item_id: int, *, outcome: str | None = None) -> int:
    """How many calls were made for an item (with ``outcome``, if given)."""
    stmt = select(func.count()).select_from(Attempt).where(Attempt.item_id == item_id)
    if outcome is not None:
        stmt = stmt.where(Attempt.outcome == outcome)
    return int(session.scalar(stmt) or 0)
