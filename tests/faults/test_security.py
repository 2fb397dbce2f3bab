"""Secrets: a password-protected Redis and PostgreSQL from settings, and no secret anywhere."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from tests.conftest import PG_CONTROL, POSTGRES_PASSWORD
from tests.support.accounting import assert_accounted_for
from tests.support.corpus import write_corpus
from tests.support.services import RedisServer
from tests.support.stack import Stack
from workers.db.models import Attempt, Item, Run
from workers.db.session import session_scope
from workers.runtime.embedded import free_port

REDIS_PASSWORD = "redis-canary-41c2e8"


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path / "redis", password=REDIS_PASSWORD)
    server.start()
    yield server
    server.stop()


def test_credentials_from_settings_and_no_secret_in_logs_rows_or_messages(
        stack: Stack, locked_redis: RedisServer, tmp_path: Path) -> None:
    if PG_CONTROL:  # the suite's own cluster: TCP logins need this password
        assert f":{POSTGRES_PASSWORD}@" in stack.database_url
    stack = replace(stack, broker_url=locked_redis.url)
    write_corpus(tmp_path / "corpus", 20)
    # Failures put error text in rows and logs: the places a secret would leak to.
    stack.simulator.configure(error_rate=0.2, rate_limit_rate=0.1, rate_limit_retry_ms=100)
    stack.start_workers(1, beat=True)
    run_id = stack.ingest(tmp_path / "corpus")["run_id"]
    report = stack.wait_for(run_id, timeout=120)
    assert report.succeeded + report.failed == 20

    secrets = [stack.env["OPENAI_API_KEY"], POSTGRES_PASSWORD, REDIS_PASSWORD]
    outputs = [stack.workers[0].log(), stack.cli("status", str(run_id)).stdout,
               stack.cli("limits").stdout, stack.cli("results", str(run_id)).stdout]
    with session_scope(stack.database_url) as s:
        outputs += [str(row) for row in s.execute(
            select(Attempt.error_message, Attempt.error_code, Attempt.worker)
            .where(Attempt.run_id == run_id)).all()]
        outputs += [str(row) for row in s.execute(
            select(Item.last_error_message, Item.source).where(Item.run_id == run_id)).all()]
        outputs.append(str(s.scalar(select(Run.status_reason).where(Run.id == run_id))))
    client = redis.Redis.from_url(locked_redis.url)
    for key in client.scan_iter("*"):
        kind = client.type(key)
        if kind == b"string":
            outputs.append(repr(client.get(key)))
        elif kind == b"hash":
            outputs.append(repr(client.hgetall(key)))
        elif kind == b"list":
            outputs.append(repr(client.lrange(key, 0, -1)))
    for secret in secrets:
        assert not any(secret in text for text in outputs), "a secret leaked"
    assert_accounted_for(stack, run_id)
