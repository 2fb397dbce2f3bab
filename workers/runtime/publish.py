"""Publishing item messages in bulk: one Redis pipeline per thousand messages.

``apply_async`` spends about 0.4 ms of CPU a message (routing, declaring the queue, a
task-sent event) and a round trip to Redis; kombu 5.7's ``Producer.batch()`` removes the
round trips but not the CPU. Ingest and the reconciler send tens of thousands at once, so
Celery's own ``create_task_message`` builds one message of protocol 2 (the headers and body a
worker expects), each item's message is that one with its own id and argument, and kombu's
Redis envelope is written here, a thousand ``LPUSH`` per pipeline.

``tests/integration/test_publish.py`` holds the envelope to what ``apply_async`` writes, field
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

from celery import Celery

from workers.runtime.celery_app import Queue, TaskName, app
from workers.settings import get_settings

#: Messages per pipeline: about 1 MB of commands.
PIPELINE_SIZE = 1000
#: kombu's Redis transport keeps priority-0 messages under the queue's own name; docpipe sends
#: no priorities.
PRIORITY = 0
#: What kombu's Producer stamps on a message for a durable exchange.
PERSISTENT = 2


def publish_items(app: Celery, task_name: str, item_ids: Sequence[int | list[int]], *,
                  queue: str) -> list[str]:
    """Send one ``task_name(arg)`` message per entry of ``item_ids`` (an id, or a group of
    ids) to ``queue``; return the task ids.

    ``queue`` is one of the app's queue names. Raises the Redis client's errors: a message is
    in the queue only if its pipeline ran, so on an error the caller treats the whole batch
    as unsent.
    """
    if not item_ids:
        return []
    queue = str(queue)  # a StrEnum member would reach the JSON as its value anyway
    # Celery builds the first message; the others differ from it only in the fields that
    # protocol 2 derives from the task id and the arguments (Celery's create_task_message
    # spent 0.15 ms a message rebuilding the rest).
    template = app.amqp.create_task_message(
        "", task_name, (item_ids[0],), {}, reply_to=app.thread_oid,  # as apply_async sets it
        time_limit=app.conf.task_time_limit, soft_time_limit=app.conf.task_soft_time_limit,
        create_sent_event=False, ignore_result=True)
    _, kwargs, embed = template.body
    properties = {**template.properties, "delivery_mode": PERSISTENT, "priority": PRIORITY,
                  "body_encoding": "base64",
                  # The default exchange routes by queue name, as apply_async(queue=...) sends.
                  "delivery_info": {"exchange": "", "routing_key": queue}}
    ids: list[str] = []
    with app.producer_or_acquire() as producer:
        client = producer.channel.client
        with client.pipeline(transaction=False) as pipe:
            for start in range(0, len(item_ids), PIPELINE_SIZE):
                for item_id in item_ids[start : start + PIPELINE_SIZE]:
                    task_id = str(uuid.uuid4())
                    body = json.dumps([[item_id], kwargs, embed]).encode()
                    argsrepr = repr((item_id,))
                    envelope = {
                        "body": base64.b64encode(body).decode(), "content-encoding": "utf-8",
                        "content-type": "application/json",
                        "headers": {**template.headers, "id": task_id, "root_id": task_id,
                                    "argsrepr": argsrepr},
                        "properties": {**properties, "correlation_id": task_id,
                                       "delivery_tag": str(uuid.uuid4())}}
                    pipe.lpush(queue, json.dumps(envelope))
                    ids.append(task_id)
                pipe.execute()
    return ids


def send_items(item_ids: Sequence[int], *, queue: str = Queue.LIVE,
               countdown: float | None = None) -> None:
    """Publish the items in messages of up to ``group_size`` ids (a message of one carries
    the bare id, as before groups).

    Messages due now go out in pipelines (:func:`publish_items`); a retry's delayed
    message goes through ``send_task``, which handles the countdown.
    """
    if not item_ids:
        return
    size = get_settings().group_size
    groups: list[int | list[int]] = [
        list(item_ids[i : i + size]) if len(item_ids) - i > 1 and size > 1 else item_ids[i]
        for i in range(0, len(item_ids), size)]
    if countdown is None:
        publish_items(app, TaskName.PROCESS_GROUP, groups, queue=queue)
        return
    with app.producer_or_acquire() as producer:
        for ids in groups:
            app.send_task(TaskName.PROCESS_GROUP, (ids,), producer=producer, queue=queue,
                          routing_key=queue, countdown=countdown)
