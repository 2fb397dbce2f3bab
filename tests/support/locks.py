"""The longest lock waits of docpipe's statements, sampled from PostgreSQL's own sessions."""

from __future__ import annotations

import threading

from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError


def is_claim(statement: str) -> bool:
    """docpipe's claim: the conditional ``UPDATE items`` that names the holder."""
    return statement.lstrip().startswith("UPDATE items") and "holder=" in statement


class LockWaits:
    """Samples ``pg_stat_activity`` every 0.1 s in a thread of its own, and keeps the
    longest time a claim (:func:`is_claim`), and any statement, was seen waiting on a lock.
    A statement's wait is counted from its start: an upper bound of its time on the lock."""

    def __init__(self, database_url: str, *, interval: float = 0.1) -> None:
        self.engine = create_engine(database_url, pool_pre_ping=True)
        self.interval = interval
        self.claim = 0.0
        self.any = 0.0
        self.waiter = ""
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        query = text("SELECT query, extract(epoch FROM clock_timestamp() - query_start) "
                     "FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                     "AND datname = current_database()")
        while not self._stop.wait(self.interval):
            try:
                with self.engine.connect() as connection:
                    rows = connection.execute(query).all()
            except DBAPIError:  # the database is away (a restart under test)
                continue
            self.samples += 1
            for statement, seconds in rows:
                seconds = float(seconds or 0)
                if is_claim(statement):
                    self.claim = max(self.claim, seconds)
                if seconds > self.any:
                    self.any, self.waiter = seconds, " ".join(statement.split())[:80]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.engine.dispose()
