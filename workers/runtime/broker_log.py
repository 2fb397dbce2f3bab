"""One line when a worker loses its broker, one when it is back.

Celery's consumer says a lost broker its own way: a warning without the broker's URL, then
an error of three lines at every reconnection attempt, and for each task it was running a
two-line warning and a traceback for the cancel a thread pool cannot do. A docpipe worker
loses nothing meanwhile (its claimed items belong to the database, its calls go on), so the
operator needs to know which broker went away, that the worker is reconnecting, and when it
is back. :class:`BrokerOutageLog` rewrites those records into that, on the worker's
handlers; every other record passes untouched.
"""

from __future__ import annotations

import logging
import threading
import time

from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from workers.errors import brief
from workers.settings import redacted

#: The loggers Celery's consumer and beat write these records to.
CONSUMER_LOGGER = "celery.worker.consumer.consumer"
CONNECTION_LOGGER = "celery.worker.consumer.connection"
BEAT_LOGGER = "celery.beat"


class BrokerOutageLog(logging.Filter):
    """Rewrite Celery's records of a broker outage into one line when it starts (or when the
    first connection fails) and one when the broker answers again."""

    def __init__(self, broker_url: str) -> None:
        super().__init__()
        self.broker = redacted(broker_url)
        self._lock = threading.Lock()
        self._down_since: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == CONSUMER_LOGGER:
            return self._consumer(record)
        if record.name == CONNECTION_LOGGER and record.msg == "Connected to %s":
            return self._back(record)
        if record.name == BEAT_LOGGER and record.msg == "Message Error: %s\n%s":
            return self._beat(record)
        return True

    def _consumer(self, record: logging.LogRecord) -> bool:
        text = record.msg if isinstance(record.msg, str) else ""
        args = record.args if isinstance(record.args, tuple) else ()
        if text == "%s (%r)" and args and "Connection to broker lost" in str(args[0]):
            return self._down(record, "was lost", args[1])
        if text.startswith("consumer: Cannot connect to") and len(args) >= 2:
            return self._down(record, "cannot be reached", args[1])
        if text.startswith("Task %s cannot be acknowledged after a connection loss"):
            return False  # a thread cannot be cancelled; its items stay claimed, not lost
        if text.startswith("Failed to cancel active request"):
            return False
        return True

    def _beat(self, record: logging.LogRecord) -> bool:
        """Beat could not send a scheduled task: for want of the broker, one line and no
        stack (none at all while this process's consumer has said the broker is away)."""
        error = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if not isinstance(error, BaseException) or not _is_connection_error(error):
            return True
        with self._lock:
            if self._down_since is not None:
                return False
        record.msg = "beat could not send a scheduled task: the broker %s cannot be reached (%s)"
        record.args = (self.broker, brief(error.__cause__ or error))
        record.exc_info = record.exc_text = None
        return True

    def _down(self, record: logging.LogRecord, what: str, error: object) -> bool:
        with self._lock:
            if self._down_since is not None:
                return False  # said once for the whole outage
            self._down_since = time.monotonic()
        record.msg = ("the broker %s %s (%s); the worker reconnects with backoff, and the "
                      "items it claimed stay its own meanwhile")
        record.args = (self.broker, what,
                       brief(error) if isinstance(error, BaseException) else str(error))
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        return True

    def _back(self, record: logging.LogRecord) -> bool:
        with self._lock:
            since, self._down_since = self._down_since, None
        if since is None:
            return True  # the first connection: Celery's own line
        record.msg = "the broker %s answers again after %.1f s"
        record.args = (self.broker, time.monotonic() - since)
        return True


def install(handlers: list[logging.Handler], broker_url: str) -> None:
    """Put one :class:`BrokerOutageLog` on ``handlers`` (shared, so an outage is said once
    whatever the handler)."""
    shared = next((f for h in handlers for f in h.filters if isinstance(f, BrokerOutageLog)),
                  None) or BrokerOutageLog(broker_url)
    for handler in handlers:
        if shared not in handler.filters:
            handler.addFilter(shared)


def _is_connection_error(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised from, is a lost connection."""
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, OSError | OperationalError | RedisConnectionError):
            return True
        current = current.__cause__ or current.__context__
    return False
