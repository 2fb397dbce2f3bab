"""The fakes in ``tests/support/fakes.py`` keep the real components' contracts: what a test
learns from a fake is what the real client (on the simulator) and the real throttle (on
Redis) do."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
import redis

from pipelines import SUMMARISE
from tests.support.fakes import FakeClient, FakeThrottle, Reply
from tests.support.services import SimulatorProcess
from workers.admission.breaker import CircuitBreaker
from workers.admission.limiter import RateLimiter
from workers.admission.throttle import Park, Throttle, Ticket, TooLarge
from workers.errors import RateLimitedError, Usage
from workers.llm.client import AsyncResponsesClient, CallResult
from workers.settings import ModelLimits, Settings

BODY = SUMMARISE.request("Acme Widgets Ltd sold ten widgets to Globex Corporation for $500.")


def _contract(call: CallResult) -> dict[str, Any]:
    """What a caller of ``create`` may rely on."""
    error = call.error
    return {
        "error": type(error).__name__ if error else None,
        "code": error.code if error else None,
        "http_status": call.http_status,
        "retry_after_known": bool(error and getattr(error, "retry_after", None)),
        "output_is_json": call.output_text is not None and isinstance(
            json.loads(call.output_text), dict),
        "has_request_id": bool(call.request_id),
        "has_response_id": bool(call.response_id),
        "usage_counted": call.usage.input_tokens > 0,
        "model": call.model,
    }


#: (simulator config, the fake's reply for the same answer)
CASES: dict[str, tuple[dict[str, Any], Reply]] = {
    "success": ({}, Reply()),
    "rate limited": ({"rate_limit_rate": 1.0, "rate_limit_retry_ms": 1500},
                     Reply.error(429, "rate_limit_exceeded", "Rate limit reached",
                                 kind="requests", headers={"retry-after-ms": "1500"})),
    "server error": ({"force_error": {"status": 500, "code": None, "type": "server_error",
                                      "message": "The server had an error"}},
                     Reply.error(500, None, "The server had an error", kind="server_error")),
    "quota": ({"quota_exhausted": True},
              Reply.error(429, "insufficient_quota", "You exceeded your current quota",
                          kind="insufficient_quota")),
    "bad request": ({"force_error": {"status": 400, "code": "invalid_value",
                                     "type": "invalid_request_error", "message": "bad"}},
                    Reply.error(400, "invalid_value", "bad", kind="invalid_request_error")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_fake_client_answers_as_the_real_one_does(simulator: SimulatorProcess,
                                                      case: str) -> None:
    config, reply = CASES[case]
    simulator.configure(**config)

    async def real_answer() -> CallResult:
        real = AsyncResponsesClient(api_key="sk-test", base_url=simulator.base_url, timeout=10)
        try:
            return await real.create(BODY)
        finally:
            await real.close()

    expected = _contract(asyncio.run(real_answer()))
    assert _contract(asyncio.run(FakeClient(reply).create(BODY))) == expected


def _settings(broker_url: str, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "broker_url": broker_url, "max_inline_wait_seconds": 0.2, "breaker_min_calls": 3,
        "breaker_window": 3, "breaker_open_seconds": 30,
        "model_limits": {BODY["model"]: ModelLimits(rpm=60_000, tpm=10_000_000)}}
    return Settings(**(values | changes))


def _real(settings: Settings) -> Throttle:
    client = redis.Redis.from_url(settings.broker_url)
    return Throttle(settings, RateLimiter(client), CircuitBreaker(
        client, window=settings.breaker_window, failure_ratio=settings.breaker_failure_ratio,
        min_calls=settings.breaker_min_calls, open_seconds=settings.breaker_open_seconds,
        max_open_seconds=settings.breaker_max_open_seconds))


Make = Callable[[Settings], Any]
THROTTLES: dict[str, Make] = {"real": _real, "fake": FakeThrottle}


def _answer(ticket: Ticket, reply: Reply) -> CallResult:
    return FakeClient(reply).answer(BODY)


def _admit(throttle: Any) -> Ticket | Park | TooLarge:
    (admission,) = throttle.before_calls([BODY])
    return admission  # type: ignore[no-any-return]


def _settle(throttle: Any, ticket: Ticket, call: CallResult) -> float | None:
    (cooldown,) = throttle.settle_calls([(ticket, call)])
    return cooldown  # type: ignore[no-any-return]


@pytest.fixture(params=sorted(THROTTLES))
def make(request: pytest.FixtureRequest) -> Make:
    return THROTTLES[request.param]


def test_a_call_within_budget_is_admitted_with_its_estimate(broker_url: str, make: Make
                                                            ) -> None:
    throttle = make(_settings(broker_url))
    ticket = _admit(throttle)
    assert isinstance(ticket, Ticket) and ticket.key is not None and ticket.estimate > 0
    assert ticket.budget.tpm == 10_000_000 and throttle.still_valid(ticket)
    assert _settle(throttle, ticket, _answer(ticket, Reply())) is None


def test_a_call_larger_than_a_minutes_tokens_is_too_large(broker_url: str, make: Make) -> None:
    limits = {BODY["model"]: ModelLimits(rpm=6000, tpm=10)}
    throttle = make(_settings(broker_url, model_limits=limits))
    admission = _admit(throttle)
    assert isinstance(admission, TooLarge) and admission.tpm == 10 and admission.estimate > 10


def test_a_429_cools_the_model_down_and_later_calls_park_for_budget(broker_url: str,
                                                                     make: Make) -> None:
    throttle = make(_settings(broker_url))
    ticket = _admit(throttle)
    assert isinstance(ticket, Ticket)
    refused = _answer(ticket, CASES["rate limited"][1])
    assert isinstance(refused.error, RateLimitedError)
    assert _settle(throttle, ticket, refused) == pytest.approx(1.5)
    parked = _admit(throttle)
    assert isinstance(parked, Park) and parked.reason == "budget"
    assert 0.5 < parked.seconds < 3


def test_transient_failures_open_the_breaker(broker_url: str, make: Make) -> None:
    throttle = make(_settings(broker_url))
    for _ in range(3):
        ticket = _admit(throttle)
        assert isinstance(ticket, Ticket)
        _settle(throttle, ticket, _answer(ticket, CASES["server error"][1]))
    parked = _admit(throttle)
    assert isinstance(parked, Park) and parked.reason == "circuit_open" and parked.seconds > 1


def test_without_the_rate_limit_every_call_is_admitted_unkeyed(broker_url: str, make: Make
                                                               ) -> None:
    throttle = make(_settings(broker_url, ratelimit_enabled=False))
    admitted = throttle.before_calls([BODY, BODY])
    assert [type(a) for a in admitted] == [Ticket, Ticket]
    assert all(isinstance(a, Ticket) and a.key is None for a in admitted)
    assert throttle.settle_calls([(a, _answer(a, Reply(usage=Usage(input_tokens=5))))
                                  for a in admitted if isinstance(a, Ticket)]) == [None, None]
