"""Bulk publishing writes the message ``apply_async`` writes, on a real Redis."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection

from workers.runtime.celery_app import Queue, TaskName, create_celery
from workers.runtime.publish import PIPELINE_SIZE, publish_items
from workers.runtime.tasks import process_group
from workers.settings import Settings

#: Fields that differ by design between two messages: their ids, arguments and sender (the
#: reference goes out through the module's app, ours through the fixture's).
PER_MESSAGE = {"id", "root_id", "correlation_id", "delivery_tag", "origin", "argsrepr",
               "reply_to"}


@pytest.fixture
def app(broker_url: str) -> Iterator[Any]:
    app = create_celery(Settings(broker_url=broker_url))
    yield app
    app.close()


def _messages(broker_url: str, queue: str) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(broker_url)
    raw = client.lrange(queue, 0, -1)
    client.close()
    return [json.loads(m) for m in reversed(raw)]  # LPUSH: the oldest is last


def _flatten(envelope: dict[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in envelope.items() if k not in ("headers", "properties", "body")}
    flat.update({f"headers.{k}": v for k, v in envelope["headers"].items()})
    flat.update({f"properties.{k}": v for k, v in envelope["properties"].items()})
    flat["body"] = json.loads(base64.b64decode(envelope["body"]))
    return flat


def test_the_envelope_is_the_one_apply_async_writes(app: Any, broker_url: str) -> None:
    queue = Queue.NIGHTLY.value
    with app.producer_or_acquire() as producer:  # the task as registered, sent to this broker
        process_group.apply_async((41,), producer=producer, queue=queue, routing_key=queue)
    publish_items(app, TaskName.PROCESS_GROUP, [42], queue=queue)
    reference, ours = (_flatten(m) for m in _messages(broker_url, queue))

    assert reference.keys() == ours.keys()
    differing = {k for k in reference if reference[k] != ours[k]}
    assert differing - {f"headers.{k}" for k in PER_MESSAGE} \
        - {f"properties.{k}" for k in PER_MESSAGE} == {"body"}
    assert reference["body"][0] == [41] and ours["body"][0] == [42]
    assert reference["body"][1:] == ours["body"][1:]
    assert ours["headers.argsrepr"] == "(42,)"
    assert ours["headers.id"] == ours["headers.root_id"] == ours["properties.correlation_id"]
    assert ours["properties.reply_to"] == app.thread_oid
    assert ours["headers.timelimit"] == [app.conf.task_time_limit, app.conf.task_soft_time_limit]


def test_a_consumer_receives_every_message_in_order(app: Any, broker_url: str) -> None:
    queue = Queue.LIVE.value
    count = PIPELINE_SIZE * 2 + 7  # three pipelines, the last one short
    ids = publish_items(app, TaskName.PROCESS_GROUP, list(range(count)), queue=queue)
    assert len(set(ids)) == count

    received: list[tuple[str, int]] = []
    with Connection(broker_url) as conn:
        simple = conn.SimpleQueue(queue)
        for _ in range(count):
            message = simple.get(timeout=5)
            args, kwargs, _ = message.decode()
            received.append((message.headers["id"], args[0]))
            assert message.headers["task"] == TaskName.PROCESS_GROUP and kwargs == {}
            message.ack()
        simple.close()
    assert received == list(zip(ids, range(count), strict=True))


def test_an_unreachable_broker_raises_and_sends_nothing(broker_url: str) -> None:
    closed = create_celery(Settings(broker_url="redis://127.0.0.1:1/0"))
    closed.conf.broker_connection_max_retries = 0
    with pytest.raises(Exception, match="(?i)connect|refused"):
        publish_items(closed, TaskName.PROCESS_GROUP, [1], queue=Queue.LIVE.value)
    assert _messages(broker_url, Queue.LIVE.value) == []
