"""Worker processes: their heartbeats, and the claims they hold."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from workers.db.dialect import insert_for
from workers.db.models import WorkerProcess, utcnow


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
