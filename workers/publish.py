"""Publishing item messages in bulk: one Redis pipeline per thousand messages.

``apply_async`` spends about 0.4 ms of CPU a message (routing, declaring the queue, a
task-sent event) and a round trip to Redis; kombu 5.7's ``Producer.batch()`` removes the
round trips but not the CPU, which caps ingest near 2,500 messages/s on one core. Ingest and
the reconciler send tens of thousands at once, so they build each message with Celery's own
``create_task_message`` (the headers and body a worker expects) and write kombu's Redis
envelope for it here, ``LPUSH``-ing a thousand per pipeline.

``tests/unit/workers/test_publish.py`` holds the envelope to what ``apply_async`` writes, field
by field, so a kombu or Celery upgrade that changes it fails there, not in production.

No task-sent event is published: Flower would hold every sent message of a 100,000-item run
as a task and push the running ones out of its bounded window. It learns of each task when a
worker receives it, and the queue lengths come from the broker.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from typing import Any

from celery import Celery

#: Messages per pipeline: about 1 MB of commands.
PIPELINE_SIZE = 1000
#: kombu's Redis transport keeps priority-0 messages under the queue's own name; docpipe sends
#: no priorities.
PRIORITY = 0
#: What kombu's Producer stamps on a message for a durable exchange.
PERSISTENT = 2


def publish_tasks(app: Celery, task_name: str, args: Sequence[tuple[Any, ...]], *,
                  queue: str) -> list[str]:
    """Send one ``task_name`` message per tuple of ``args`` to ``queue``; return the task ids.

    ``queue`` is one of the app's queue names. Raises the Redis client's errors: a message is
    in the queue only if its pipeline ran, so on an error the caller treats the whole batch
    as unsent.
    """
    soft, hard = app.conf.task_soft_time_limit, app.conf.task_time_limit
    queue = str(queue)  # a StrEnum member would reach the JSON as its value anyway
    # The default exchange routes by queue name, as apply_async(queue=...) sends.
    delivery_info = {"exchange": "", "routing_key": queue}
    ids: list[str] = []
    reply_to = app.thread_oid  # as apply_async sets it, though no result is ever sent
    with app.producer_or_acquire() as producer:
        client = producer.channel.client
        with client.pipeline(transaction=False) as pipe:
            for start in range(0, len(args), PIPELINE_SIZE):
                for task_args in args[start : start + PIPELINE_SIZE]:
                    task_id = str(uuid.uuid4())
                    message = app.amqp.create_task_message(
                        task_id, task_name, task_args, {}, reply_to=reply_to, time_limit=hard,
                        soft_time_limit=soft, create_sent_event=False, ignore_result=True)
                    pipe.lpush(queue, json.dumps(_envelope(message, delivery_info)))
                    ids.append(task_id)
                pipe.execute()
    return ids


def _envelope(message: Any, delivery_info: dict[str, str]) -> dict[str, Any]:
    """kombu's Redis envelope: what ``Channel.prepare_message`` and ``basic_publish`` build."""
    body = json.dumps(message.body).encode()
    properties = {**message.properties, "delivery_mode": PERSISTENT,
                  "delivery_info": dict(delivery_info), "priority": PRIORITY,
                  "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())}
    return {"body": base64.b64encode(body).decode(), "content-encoding": "utf-8",
            "content-type": "application/json", "headers": message.headers,
            "properties": properties}
