"""The Redis transport docpipe's Celery uses: kombu's, with one failure made recoverable.

When Redis goes away, Celery's consumer drops its connection (``Connection.collect``), which
detaches the kombu transport from it before every channel is closed: closing a channel
restores its unacknowledged messages, which needs Redis, so the first channel that has any
fails and the rest stay open. Celery closes them later, as its consumer restarts; each then
builds its connection parameters from the detached transport and raises ``AttributeError``
(``'NoneType' object has no attribute 'hostname'`` in ``Channel._connparams``). That is no
connection error, so Celery calls it unrecoverable and the worker stops consuming.

Here that state raises a Redis ``ConnectionError`` instead, which Celery's restart ignores
as it ignores the other errors of a lost broker. The messages stay in Redis's unacked set:
no living consumer holds them any more, so the heartbeat's sweep puts them back after a
holder timeout (:mod:`workers.runtime.heartbeat`), or kombu's after the visibility timeout.
Items already claimed are owned by the database meanwhile.

:func:`install` makes ``redis://`` URLs use it in this process, so every URL an operator
sees is still the one they gave. ``rediss://`` keeps kombu's own transport: kombu sets its
TLS defaults from that scheme's name.
"""

from __future__ import annotations

from typing import Any

import kombu.transport
from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

#: The import path kombu resolves the ``redis`` scheme to once installed.
TRANSPORT = "workers.runtime.transport:Transport"


class Channel(kombu_redis.Channel):
    """A channel whose transport, once detached from its connection, fails as a lost
    connection does."""

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection is None or self.connection.client is None:
            raise RedisConnectionError(
                "the broker connection this channel belonged to was closed")
        params: dict[str, Any] = super()._connparams(  # type: ignore[misc]
            asynchronous=asynchronous)
        return params


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel


def install() -> None:
    """Make ``redis://`` broker URLs use :class:`Transport` in this process."""
    kombu.transport.TRANSPORT_ALIASES["redis"] = TRANSPORT
    # kombu caches the class an alias resolved to; one resolved before this must go.
    kombu.transport._transport_cache.pop("redis", None)  # type: ignore[attr-defined]
