"""Enqueue: item messages per second into Redis, three ways.

- ``apply_async``, one message at a time on one producer (docpipe before issue 8);
- ``apply_async`` inside kombu 5.7's ``Producer.batch()``, which pipelines the round trips
  (with the task-sent event off, as for bulk sends);
- :func:`workers.runtime.publish.publish_items`: one message built by Celery's
  ``create_task_message``, the others copied from it, kombu's Redis envelope, a thousand
  ``LPUSH`` per pipeline.

Each sends ``--messages`` to an embedded Redis; the queue is checked to hold them all.

    python bench/enqueue.py --messages 20000 --record
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from record import describe_machine, emit  # noqa: E402

from workers.runtime.embedded import embedded_redis  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    count = args.messages
    with tempfile.TemporaryDirectory(prefix="docpipe-enqueue-") as tmp, \
            embedded_redis(tmp) as broker:
        os.environ["DOCPIPE_BROKER_URL"] = broker
        import redis

        from workers.runtime.celery_app import Queue, TaskName, app
        from workers.runtime.publish import publish_items
        from workers.runtime.tasks import process_group

        client = redis.Redis.from_url(broker)
        queue = Queue.LIVE.value

        def one_by_one() -> None:
            with app.producer_or_acquire() as producer:
                for i in range(count):
                    process_group.apply_async((i,), producer=producer, queue=queue,
                                             routing_key=queue)

        def kombu_batch() -> None:
            app.conf.task_send_sent_event = False
            try:
                with app.producer_or_acquire() as producer, producer.batch(max_size=1000):
                    for i in range(count):
                        process_group.apply_async((i,), producer=producer, queue=queue,
                                                 routing_key=queue, declare=[])
            finally:
                app.conf.task_send_sent_event = True

        def pipelined() -> None:
            publish_items(app, TaskName.PROCESS_GROUP, list(range(count)), queue=queue)

        ways: list[tuple[str, Callable[[], None]]] = [
            ("`apply_async`, one round trip a message (before)", one_by_one),
            ("`apply_async` in kombu's `Producer.batch()`, no task-sent event", kombu_batch),
            ("`publish_items`: a thousand `LPUSH` per pipeline (now)", pipelined),
        ]
        rows = []
        for name, send in ways:
            client.delete(queue)
            began = time.perf_counter()
            send()
            seconds = time.perf_counter() - began
            assert client.llen(queue) == count, (name, client.llen(queue))
            rows.append(f"| {name} | {count:,} | {seconds:.2f} s | {count / seconds:,.0f} |")
            print(rows[-1], flush=True)
        client.close()
    table = "\n".join(rows)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = f"""
### Enqueue: {count:,} item messages into Redis ({when})

Command: `python bench/enqueue.py {' '.join(sys.argv[1:])}`{"  "}
Machine: {describe_machine()}, an embedded Redis on the same machine, one process sending.

| how | messages | time | messages/s |
|---|---:|---:|---:|
{table}
"""
    emit(text, record=args.record)


if __name__ == "__main__":
    main()
