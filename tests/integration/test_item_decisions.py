"""One item through the engine's one flow (a group of one) with the fake client and
throttle: each answer the API can give ends in the state the decision core says, and the
state machine's table allows, without a network or Redis."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from pipelines import get_pipeline
from tests.support.db import new_run
from tests.support.fakes import FakeClient, FakeThrottle, Reply, process_one
from workers.db import states
from workers.db.models import Attempt, Item
from workers.db.session import session_scope
from workers.db.states import ItemStatus as S
from workers.settings import ModelLimits, get_settings


def _item() -> int:
    _, (item_id,) = new_run(["Globex bought 10 widgets from Acme for $500 on 3 May 2025."],
                            version=get_pipeline("summarise").version)
    return item_id


def _row(item_id: int) -> tuple[str, str | None, int]:
    with session_scope() as s:
        item = s.get(Item, item_id)
        assert item is not None
        calls = s.scalar(select(func.count()).select_from(Attempt)
                         .where(Attempt.item_id == item_id)) or 0
        return item.status, item.last_error_code, calls


CASES = {
    "an answer": (Reply(), "succeeded", (S.SUCCEEDED, None, 1)),
    "a 429": (Reply.error(429, "rate_limit_exceeded", kind="requests",
                          headers={"retry-after-ms": "800"}), "retry", (S.RETRY, None, 1)),
    "a 500": (Reply.error(500, kind="server_error"), "retry", (S.RETRY, "http_500", 1)),
    "a 400": (Reply.error(400, "invalid_value", kind="invalid_request_error"), "failed",
              (S.FAILED, "invalid_value", 1)),
    "no quota": (Reply.error(429, "insufficient_quota", kind="insufficient_quota"), "paused",
                 (S.PENDING, "insufficient_quota", 1)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_answer_ends_in_the_state_the_decision_says(migrated_db: str, case: str) -> None:
    reply, outcome, row = CASES[case]
    settings = get_settings()
    item_id = _item()
    client, throttle = FakeClient(reply), FakeThrottle(settings)
    result = process_one(item_id, settings=settings, client=client, throttle=throttle)
    assert result.status == outcome
    status, code, calls = _row(item_id)
    assert (status, code, calls) == row
    assert states.reachable(S.RUNNING, status)
    assert len(client.bodies) == 1 and len(throttle.settled) == 1


def test_an_open_breaker_parks_the_item_without_a_call(migrated_db: str) -> None:
    settings = get_settings()
    item_id = _item()
    client, throttle = FakeClient(), FakeThrottle(settings)
    throttle.open_until = time.monotonic() + 60
    result = process_one(item_id, settings=settings, client=client, throttle=throttle)
    assert result.status == "waiting"
    assert _row(item_id) == (S.RETRY, None, 0) and client.bodies == []


def test_a_request_too_large_for_the_limit_fails_without_a_call(migrated_db: str,
                                                                 configure: object) -> None:
    settings = get_settings().model_copy(update={"model_limits": {
        get_pipeline("summarise").model: ModelLimits(rpm=100, tpm=10)}})
    item_id = _item()
    client = FakeClient()
    result = process_one(item_id, settings=settings, client=client,
                         throttle=FakeThrottle(settings))
    assert result.status == "failed"
    status, code, calls = _row(item_id)
    assert (status, calls) == (S.FAILED, 0) and code and client.bodies == []
