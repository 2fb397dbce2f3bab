"""A lost broker is said in one line and its return in one, from Celery's own records.

The records are made the way Celery makes them, from its own message texts, so a Celery
upgrade that rewords them fails here rather than flooding a worker's log again.
"""

from __future__ import annotations

import io
import logging
import traceback
from collections.abc import Iterator

import pytest
from celery import beat as celery_beat
from celery.worker.consumer import connection as celery_connection
from celery.worker.consumer import consumer as celery_consumer
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from workers.runtime import broker_log

BROKER = "redis://:s3cret@127.0.0.1:6390/0"
SHOWN = "redis://:**@127.0.0.1:6390/0"  # as Celery's as_uri() masks it
REFUSED = RedisConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    broker_log.install([handler], BROKER)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def lines(output: io.StringIO) -> list[str]:
    return output.getvalue().splitlines()


def lose_the_broker() -> None:
    """What Celery's consumer logs when its connection drops under two running tasks, then
    fails to reconnect twice."""
    celery_consumer.warn("%s (%r)", celery_consumer.CONNECTION_RETRY,
                         RedisConnectionError("Connection closed by server."))
    for task in ("a", "b"):
        celery_consumer.warn(
            celery_consumer.TERMINATING_TASK_ON_RESTART_AFTER_A_CONNECTION_LOSS, task)
        try:
            raise REFUSED
        except RedisConnectionError:
            celery_consumer.warn("Failed to cancel active request %r after connection loss",
                                 task, exc_info=True)
    for n in (1, 2):
        celery_consumer.error(celery_consumer.CONNECTION_ERROR, SHOWN, REFUSED,
                              f"Trying again in {2 * n:.2f} seconds... ({n}/None)")


def test_a_lost_broker_is_one_line_naming_it_without_its_password(
        output: io.StringIO) -> None:
    lose_the_broker()
    assert lines(output) == [
        "WARNING the broker redis://:***@127.0.0.1:6390/0 was lost (ConnectionError: "
        "Connection closed by server); the worker reconnects with backoff, and the items "
        "it claimed stay its own meanwhile"]
    assert "s3cret" not in output.getvalue() and "Traceback" not in output.getvalue()


def test_its_return_is_one_line_with_the_outage_length(output: io.StringIO) -> None:
    celery_connection.info("Connected to %s", SHOWN)  # the first connection: Celery's line
    lose_the_broker()
    celery_connection.info("Connected to %s", SHOWN)
    lose_the_broker()  # a second outage is said again
    first, lost, back, lost_again = lines(output)
    assert first == f"INFO Connected to {SHOWN}"
    assert "was lost" in lost and "was lost" in lost_again
    assert back.startswith("INFO the broker redis://:***@127.0.0.1:6390/0 answers again after ")
    assert back.endswith(" s")


def test_a_broker_that_cannot_be_reached_at_start_is_said_once(output: io.StringIO) -> None:
    for n in (1, 2, 3):
        celery_consumer.error(celery_consumer.CONNECTION_ERROR, SHOWN, REFUSED,
                              f"Trying again in {2 * n:.2f} seconds... ({n}/None)")
    assert lines(output) == [
        "WARNING the broker redis://:***@127.0.0.1:6390/0 cannot be reached (ConnectionError: "
        "Error 111 connecting to 127.0.0.1:6390. Connection refused); the worker reconnects "
        "with backoff, and the items it claimed stay its own meanwhile"]


def _beat_fails(error: BaseException) -> None:
    try:
        raise error
    except Exception as exc:
        celery_beat.error("Message Error: %s\n%s", exc, traceback.format_stack(),
                          exc_info=True)


def _unsendable() -> celery_beat.SchedulingError:
    """What beat raises when the broker is away: kombu's error, raised from Redis's."""
    try:
        raise OperationalError(str(REFUSED)) from REFUSED
    except OperationalError as cause:
        scheduling = celery_beat.SchedulingError(
            f"Couldn't apply scheduled task reconcile: {cause}")
        scheduling.__cause__ = cause
    return scheduling


def test_beat_says_a_lost_broker_in_one_line_and_other_errors_in_full(
        output: io.StringIO) -> None:
    _beat_fails(_unsendable())
    (line,) = lines(output)
    assert line == ("ERROR beat could not send a scheduled task: the broker "
                    "redis://:***@127.0.0.1:6390/0 cannot be reached (OperationalError: "
                    "Error 111 connecting to 127.0.0.1:6390. Connection refused)")
    _beat_fails(ValueError("an entry that cannot be encoded"))
    assert "Traceback" in output.getvalue(), "an error that is no outage keeps its stack"


def test_beat_is_silent_while_the_consumer_has_said_the_broker_is_away(
        output: io.StringIO) -> None:
    lose_the_broker()
    _beat_fails(_unsendable())
    _beat_fails(_unsendable())
    assert len(lines(output)) == 1


def test_other_records_pass_untouched(output: io.StringIO) -> None:
    celery_consumer.info("Skipping prefetch count reduction after connection restart")
    logging.getLogger("docpipe.worker").warning("item 3 released")
    assert lines(output) == [
        "INFO Skipping prefetch count reduction after connection restart",
        "WARNING item 3 released"]
