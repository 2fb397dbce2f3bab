"""Engines (one per process, created after fork), the session scope and the schema check."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, exc, make_url
from sqlalchemy.orm import Session, sessionmaker

from workers.errors import DatabaseNotMigrated
from workers.process.local import PerProcess
from workers.settings import get_settings, redacted

log = logging.getLogger("docpipe.db")

T = TypeVar("T")

_engines: PerProcess[str, Engine] = PerProcess()
_makers: dict[Engine, sessionmaker[Session]] = {}


#: PostgreSQL keeps an application_name of at most this many characters.
_NAME_LENGTH = 63
_application_name: str | None = None


def application_name(holder: str) -> str:
    """The ``application_name`` the connections of the worker process ``holder`` carry, so
    that the sweep can end the sessions of a holder found dead."""
    return f"docpipe {holder}"[:_NAME_LENGTH]


def name_connections(holder: str) -> None:
    """From now on, this process's connections carry ``holder``'s application name (its
    engines are made anew, so every later session does)."""
    global _application_name
    _application_name = application_name(holder)
    dispose_engines()


def create_db_engine(url: str, *, pool_size: int = 10, idle_transaction_seconds: float = 0
                     ) -> Engine:
    """Create an engine for ``url`` with docpipe's connection policy.

    PostgreSQL: pre-ping so a restarted server costs a reconnect, not a failed task; with
    ``idle_transaction_seconds``, the server ends a session idle inside a transaction that
    long (a stopped process never holds a lock for good), and no statement waits longer for
    a lock.
    SQLite: WAL, a generous busy timeout and ``BEGIN IMMEDIATE`` so concurrent writers wait
    for the lock instead of failing with "database is locked".
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})
        _configure_sqlite(engine)
        return engine
    connect_args: dict[str, Any] = {}
    if _application_name:
        connect_args["application_name"] = _application_name
    if idle_transaction_seconds:
        ms = int(idle_transaction_seconds * 1000)
        connect_args["options"] = (f"-c idle_in_transaction_session_timeout={ms} "
                                   f"-c lock_timeout={ms}")
    return create_engine(
        url, pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800,
        connect_args=connect_args)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when a transaction begins.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def get_engine(url: str | None = None) -> Engine:
    """The engine for ``url`` (default: the settings' database) owned by this process.

    Keyed by process id, so a forked child never uses its parent's pooled connections.
    """
    settings = get_settings()
    url = url or settings.database_url
    return _engines.get(url, lambda: _made(create_db_engine(
        url, pool_size=min(settings.pool_concurrency, 20),
        idle_transaction_seconds=settings.db_idle_transaction_seconds)))


def _made(engine: Engine) -> Engine:
    _makers[engine] = sessionmaker(engine, expire_on_commit=False)
    return engine


def forget_inherited_engines() -> None:
    """Drop engines inherited through fork without closing their parent's connections."""
    for engine in _engines.take_inherited():
        engine.dispose(close=False)
        _makers.pop(engine, None)


def dispose_engines() -> None:
    """Close every engine this process opened."""
    for engine in _engines.take_own():
        engine.dispose()
        _makers.pop(engine, None)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits when the block succeeds and rolls back when it raises."""
    engine = get_engine(url)
    session = _makers[engine]()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` says the database could not be reached or dropped the connection
    (a restart, a failover, a pool that could not connect in time), rather than refusing
    what was asked: the same transaction may succeed once it answers again."""
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, exc.OperationalError | exc.InterfaceError | exc.TimeoutError)


def retry_outage(transaction: Callable[[], T], *, seconds: float, what: str) -> T:
    """Run ``transaction`` (a whole one: it opens its own session), again after each outage
    (:func:`is_outage`) for up to ``seconds``, waiting longer each time. Any other error,
    or an outage past ``seconds``, is raised."""
    deadline = time.monotonic() + seconds
    delay = 0.25
    while True:
        try:
            return transaction()
        except Exception as error:
            if not is_outage(error) or time.monotonic() + delay > deadline:
                raise
            # The heartbeat says once that the database is away; each wait here is detail.
            log.debug("the database could not be reached while %s (%s): trying again in "
                      "%.2g s", what, type(error).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, 4.0)


def ensure_migrated(url: str | None = None) -> None:
    """Refuse to go on unless the database is at the migrations' head.

    Raises:
        DatabaseNotMigrated: with the current and expected revisions and the command to run.
    """
    from workers.db.migrations import HEAD_REVISION, stored_revision

    url = url or get_settings().database_url
    current = stored_revision(get_engine(url))
    head = HEAD_REVISION
    if current != head:
        state = "has no docpipe schema" if current is None else f"is at revision {current}"
        raise DatabaseNotMigrated(
            f"the database {redacted(url)} {state}, "
            f"this docpipe needs {head}: run `docpipe db upgrade`"
        )
