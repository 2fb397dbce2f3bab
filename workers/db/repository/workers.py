"""Worker processes: their heartbeats, the claims they hold (renewed while alive, and
checked before an answer is written), and the claims of those whose heartbeat stopped."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, delete, func, select, text, update
from sqlalchemy.orm import Session

from workers.db.dialect import any_in, insert_for, is_postgres
from workers.db.models import Item, ItemStatus, Run, WorkerProcess, utcnow

#: The PostgreSQL advisory lock one dead-holder sweep at a time holds (any fixed 64-bit key).
SWEEP_LOCK = 0x646F6370_73776570  # "docp" "swep"


def beat(session: Session, token: str, *, host: str, pid: int) -> bool:
    """Record that the process ``token`` is alive now. True when its row had to be written
    anew (the process is new, or its row was removed meanwhile)."""
    now = utcnow()
    updated = session.execute(
        update(WorkerProcess).where(WorkerProcess.id == token).values(beat_at=now)
        .execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
    if updated:
        return False
    session.execute(insert_for(session, WorkerProcess).values(
        id=token, host=host, pid=pid, started_at=now, beat_at=now).on_conflict_do_nothing())
    return True


def forget_workers(session: Session, tokens: Sequence[str]) -> None:
    """Remove the rows of processes that ended."""
    if tokens:
        session.execute(delete(WorkerProcess).where(WorkerProcess.id.in_(tokens))
                        .execution_options(synchronize_session=False))


def live_workers(session: Session, since: datetime) -> list[WorkerProcess]:
    """The processes that have sent a heartbeat since ``since``, oldest first."""
    return list(session.scalars(select(WorkerProcess).where(WorkerProcess.beat_at >= since)
                                .order_by(WorkerProcess.started_at, WorkerProcess.id)))


def worker_count(session: Session, since: datetime) -> int:
    """How many processes have sent a heartbeat since ``since``."""
    return int(session.scalar(
        select(func.count()).select_from(WorkerProcess).where(WorkerProcess.beat_at >= since))
        or 0)


def take_sweep_lock(session: Session) -> bool:
    """Take the fleet's one sweep lock until the transaction ends; False when another sweep
    holds it. On SQLite, one writer at a time already (``BEGIN IMMEDIATE``): always True."""
    if not is_postgres(session):
        return True
    return bool(session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"),
                               {"key": SWEEP_LOCK}))


def dead_workers(session: Session, cutoff: datetime) -> list[str]:
    """The processes whose last heartbeat is older than ``cutoff``."""
    return list(session.scalars(
        select(WorkerProcess.id).where(WorkerProcess.beat_at < cutoff)
        .order_by(WorkerProcess.id)))


def claims_of_the_dead(session: Session, dead: Sequence[str], cutoff: datetime
                       ) -> dict[str, list[int]]:
    """Running items held by ``dead`` processes, or by a holder that has no heartbeat row
    at all and claimed before ``cutoff`` (it died before its first beat), by their run's
    queue, rows locked for the transaction (others' locked rows are skipped)."""
    has_row = select(WorkerProcess.id).where(WorkerProcess.id == Item.holder).exists()
    orphan = Item.holder.is_not(None) & ~has_row & (Item.updated_at < cutoff)
    condition = (Item.holder.in_(dead) | orphan) if dead else orphan
    rows = session.execute(
        select(Item.id, Run.queue).join(Run, Run.id == Item.run_id)
        .where(Item.status == ItemStatus.RUNNING, condition)
        .order_by(Item.id)
        .with_for_update(of=Item, skip_locked=True))
    by_queue: dict[str, list[int]] = {}
    for item_id, queue in rows:
        by_queue.setdefault(queue, []).append(item_id)
    return by_queue


def end_sessions(session: Session, names: Sequence[str]) -> int:
    """End the database sessions whose application name is one of ``names`` (those of worker
    processes found dead): a stopped process must not hold its locks until it wakes up. Its
    open transaction is rolled back. PostgreSQL only; returns how many were ended."""
    if not names or not is_postgres(session):
        return 0
    return len(session.execute(
        text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
             "WHERE application_name = ANY(:names) AND pid <> pg_backend_pid()"),
        {"names": list(names)}).all())


def taken_over(session: Session, item_ids: Sequence[int], *, holder: str) -> set[int]:
    """Which of ``item_ids`` ``holder`` no longer holds (its claim was voided, or another
    worker claimed the item since), locking the rows until the transaction ends.

    A writer calls this first in the transaction that writes its answers, so a process
    stopped past its heartbeat, then continued, records what it paid for and nothing else.
    """
    if not item_ids:
        return set()
    rows = session.execute(
        select(Item.id, Item.status, Item.holder)
        .where(any_in(session, Item.id, item_ids, BigInteger))
        .order_by(Item.id)
        .with_for_update())
    return {item_id for item_id, status, held_by in rows
            if status != ItemStatus.RUNNING or held_by != holder}


def renew_leases(session: Session, item_ids: Sequence[int], *, holder: str,
                 lease_seconds: int) -> int:
    """Extend the leases of ``holder``'s claims among ``item_ids``: its calls are alive.

    Rows locked by another transaction are skipped, not waited for: one of this process's
    writers holds them while it writes their answers (the lease no longer matters), or the
    sweep while it voids them. Waiting, in whatever order the rows came, deadlocked with
    the writers, who lock theirs in id order; the next beat renews what was skipped.
    """
    if not item_ids:
        return 0
    free = (select(Item.id)
            .where(any_in(session, Item.id, item_ids, BigInteger), Item.holder == holder,
                   Item.status == ItemStatus.RUNNING)
            .order_by(Item.id).with_for_update(skip_locked=True))
    result = session.execute(
        update(Item)
        .where(Item.id.in_(free.scalar_subquery()))
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False))
    return int(result.rowcount)  # type: ignore[attr-defined]
