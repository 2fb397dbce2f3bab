"""Processing when docpipe's own services fail under an item: released, never lost."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipelines import get_pipeline
from tests.support.db import new_run
from workers.admission.breaker import CircuitBreaker
from workers.admission.limiter import RateLimiter
from workers.admission.throttle import Throttle
from workers.db.models import Item, ItemStatus
from workers.db.session import session_scope
from workers.items import processing
from workers.items.engine import Engine
from workers.items.group import process_items
from workers.llm.client import AsyncResponsesClient
from workers.runtime.embedded import free_port
from workers.settings import Settings, get_settings


def run_of(text: str) -> int:
    _, (item_id,) = new_run([text], version=get_pipeline("summarise").version)
    return item_id


def unreachable_redis_throttle(settings: Settings) -> Throttle:
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.5,
                         retry=Retry(NoBackoff(), 0))
    return Throttle(settings, RateLimiter(client), CircuitBreaker(client))


def process(item_id: int, settings: Settings) -> processing.Outcome:
    engine = Engine(lambda: AsyncResponsesClient(api_key="sk-never-used",
                                                 base_url="http://127.0.0.1:9/v1", timeout=1),
                    in_flight=1)
    try:
        return process_items([item_id], settings=settings, engine=engine,
                             throttle=unreachable_redis_throttle(settings)).wait(30)[item_id]
    finally:
        engine.close()


def test_an_outage_under_an_item_releases_it_for_later(migrated_db: str) -> None:
    item_id = run_of("Redis goes away while this is processed.")
    outcome = process(item_id, get_settings())
    assert outcome == processing.Outcome("retry")  # no message: the broker may be the fault
    with session_scope() as s:
        item = s.get(Item, item_id)
        assert item is not None
        assert item.status == ItemStatus.RETRY and item.lease_expires_at is None
        assert item.last_error_class == "infrastructure"
        assert item.last_error_code == "ConnectionError"
        assert item.queued_at is None and item.not_before is not None
        assert item.worker_losses == 0, "an outage is not a lost worker"


def test_an_item_out_of_attempts_fails_with_the_last_error(migrated_db: str) -> None:
    item_id = run_of("Redis stays away.")
    settings = get_settings().model_copy(update={"max_attempts": 1})
    assert process(item_id, settings) == processing.Outcome("failed")
    with session_scope() as s:
        item = s.get(Item, item_id)
        assert item is not None and item.status == ItemStatus.FAILED
        assert item.last_error_message is not None
        assert item.last_error_message.startswith("gave up after 1 attempts: ConnectionError")
