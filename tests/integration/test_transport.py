"""docpipe's Redis transport on a real Redis that dies under a consumer with unacked messages.

The state Celery's consumer meets when Redis goes away: the connection is collected while a
channel still holds a message it could not acknowledge, and that channel is closed later.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Consumer, Message, Producer, Queue
from kombu.common import ignore_errors

from tests.support.services import RedisServer
from workers.runtime import transport
from workers.runtime.embedded import free_port

KOMBU_TRANSPORT = "kombu.transport.redis:Transport"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path / "redis")
    server.start()
    yield server
    server.kill()


def _stranded(server: RedisServer, transport_path: str) -> tuple[Connection, list[Message]]:
    """Two channels each holding one unacknowledged message, Redis killed, the connection
    collected as Celery's consumer does on a connection error."""
    connection = Connection(server.url, transport=transport_path,
                            transport_options={"visibility_timeout": 1})
    received: list[Message] = []
    for n in range(2):
        channel = connection.channel()
        queue = Queue(f"q{n}", routing_key=f"q{n}")
        Producer(channel).publish({"n": n}, routing_key=f"q{n}", declare=[queue])
        Consumer(channel, [queue], no_ack=False,
                 callbacks=[lambda _body, message: received.append(message)]).consume()
    while len(received) < 2:
        connection.drain_events(timeout=5)
    server.kill()
    connection.collect()
    return connection, received


def _close_as_celery_does(connection: Connection, channels: list[Any]) -> None:
    """Close each channel as Celery's consumer restart does, ignoring connection errors, and
    again: a channel caught in its BRPOP read fails on that read first, still open."""
    for channel in channels:
        for _ in range(2):
            ignore_errors(connection, channel.close)


def test_kombus_own_transport_stops_on_the_channel_left_open(own_redis: RedisServer) -> None:
    """The upstream failure this transport exists for: once kombu no longer raises it,
    :mod:`workers.runtime.transport` can go."""
    connection, received = _stranded(own_redis, KOMBU_TRANSPORT)
    left_open = [m.channel for m in received if not m.channel.closed]
    assert left_open, "the first channel to fail its restore leaves the others open"
    with pytest.raises(AttributeError, match="hostname"):
        _close_as_celery_does(connection, left_open)


def test_a_channel_closed_after_its_connection_fails_as_a_lost_connection(
        own_redis: RedisServer) -> None:
    connection, received = _stranded(own_redis, transport.TRANSPORT)
    left_open = [m.channel for m in received if not m.channel.closed]
    assert left_open
    with pytest.raises(connection.connection_errors):
        left_open[-1].close()
    _close_as_celery_does(connection, left_open)
    assert all(channel.closed for channel in left_open)


def test_the_messages_it_held_come_back_after_the_visibility_timeout(
        own_redis: RedisServer) -> None:
    connection, received = _stranded(own_redis, transport.TRANSPORT)
    _close_as_celery_does(connection, [m.channel for m in received])
    own_redis.start()
    time.sleep(1.1)  # the visibility timeout of the stranded messages
    again = Connection(own_redis.url, transport=transport.TRANSPORT,
                       transport_options={"visibility_timeout": 1})
    try:
        channel = again.channel()
        channel.qos.restore_visible(num=10)
        bodies = []
        for n in range(2):
            message = channel.basic_get(f"q{n}", no_ack=True)
            assert message is not None, f"the message of q{n} was lost"
            bodies.append(message.decode())
        assert bodies == [{"n": 0}, {"n": 1}]
    finally:
        again.close()


def test_redis_urls_resolve_to_this_transport_and_show_as_given() -> None:
    transport.install()
    connection = Connection("redis://:secret@127.0.0.1:6390/0")
    assert connection.transport_cls == "redis"
    assert isinstance(connection.transport, transport.Transport)
    assert connection.as_uri() == "redis://:**@127.0.0.1:6390/0"
