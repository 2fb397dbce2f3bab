"""Every failure the API can produce becomes the docpipe error that says what to do."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from pipelines import SUMMARISE
from tests.support.services import SimulatorProcess
from workers.errors import (
    AuthenticationFailedError,
    BadOutputError,
    ModelNotFoundError,
    PermanentAPIError,
    QuotaExhaustedError,
    RateLimitedError,
    RequestRefusedError,
    TransientError,
    Usage,
)
from workers.llm.client import AsyncResponsesClient, CallResult
from workers.llm.pricing import cost_usd, price_for
from workers.runtime.embedded import free_port

TEXT = "Acme Widgets Ltd sold ten widgets to Globex Corporation for $500.00 on 3 May 2025."


class Client:
    """The engine's client, one call at a time from a test: each call on a loop of its own."""

    def __init__(self, base_url: str, *, key: str = "sk-test", timeout: float = 10) -> None:
        self.base_url, self.key, self.timeout = base_url, key, timeout

    def create(self, body: dict[str, Any]) -> CallResult:
        async def once() -> CallResult:
            client = AsyncResponsesClient(api_key=self.key, base_url=self.base_url,
                                          timeout=self.timeout)
            try:
                return await client.create(body)
            finally:
                await client.close()
        return asyncio.run(once())


def client_for(simulator: SimulatorProcess, *, key: str = "sk-test", timeout: float = 10
               ) -> Client:
    return Client(simulator.base_url, key=key, timeout=timeout)


def test_success_carries_usage_ids_and_latency(simulator: SimulatorProcess) -> None:
    result = client_for(simulator).create(SUMMARISE.request(TEXT))
    assert result.error is None and result.output_text
    assert result.http_status == 200
    assert result.request_id and result.response_id
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert result.latency_ms >= 0


@pytest.mark.parametrize(("config", "error_type", "code"), [
    ({"error_rate": 1.0}, TransientError, None),
    ({"rate_limit_rate": 1.0}, RateLimitedError, "rate_limit_exceeded"),
    ({"quota_exhausted": True}, QuotaExhaustedError, "insufficient_quota"),
    ({"refusal_rate": 1.0}, BadOutputError, "refusal"),
    ({"truncate_rate": 1.0}, BadOutputError, "truncated"),
    ({"reset_rate": 1.0}, TransientError, "connection_error"),
])
def test_faults_are_classified_and_called_once(
    simulator: SimulatorProcess, config: dict[str, object], error_type: type, code: str | None
) -> None:
    simulator.configure(**config)
    result = client_for(simulator).create(SUMMARISE.request(TEXT))
    assert isinstance(result.error, error_type), result.error
    if code:
        assert result.error.code == code
    # max_retries=0: the SDK never retried on its own.
    assert simulator.stats()["counters"]["requests"] == 1


def test_rate_limited_carries_the_servers_wait(simulator: SimulatorProcess) -> None:
    simulator.configure(rpm=1)
    client = client_for(simulator)
    assert client.create(SUMMARISE.request("one")).error is None
    error = client.create(SUMMARISE.request("two")).error
    assert isinstance(error, RateLimitedError)
    assert error.retry_after is not None and 1 <= error.retry_after <= 61
    assert error.request_id and error.http_status == 429


def test_bad_output_keeps_the_usage_it_cost(simulator: SimulatorProcess) -> None:
    simulator.configure(truncate_rate=1.0)
    result = client_for(simulator).create(SUMMARISE.request(TEXT))
    assert isinstance(result.error, BadOutputError)
    assert result.error.usage.input_tokens > 0 and result.usage.output_tokens > 0


def test_auth_model_and_bad_request(simulator: SimulatorProcess) -> None:
    simulator.configure(api_key="sk-right")
    assert isinstance(client_for(simulator, key="sk-wrong").create(SUMMARISE.request(TEXT)).error,
                      AuthenticationFailedError)
    simulator.configure(api_key=None)
    client = client_for(simulator)
    missing = client.create({**SUMMARISE.request(TEXT), "model": "no-such-model"}).error
    assert isinstance(missing, ModelNotFoundError) and missing.code == "model_not_found"
    # A field of the pipeline's own request: every item would meet it, so the run pauses.
    bad = client.create({**SUMMARISE.request(TEXT), "max_output_tokens": 1}).error
    assert isinstance(bad, RequestRefusedError) and bad.code == "integer_below_min_value"
    assert bad.param == "max_output_tokens" and bad.message.startswith("Invalid 'max_output")
    # The document's own input: only its item fails.
    body = SUMMARISE.request(TEXT)
    body["input"][0]["content"].append({"type": "input_image", "image_url": "not-a-data-url"})
    own = client.create(body).error
    assert type(own) is PermanentAPIError and own.code == "invalid_image_url"


def test_timeout_and_refused_connection_are_transient(simulator: SimulatorProcess) -> None:
    simulator.configure(timeout_rate=1.0, timeout_seconds=2)
    slow = client_for(simulator, timeout=0.5).create(SUMMARISE.request(TEXT)).error
    assert isinstance(slow, TransientError) and slow.code == "timeout"
    nobody = Client(f"http://127.0.0.1:{free_port()}/v1", key="sk", timeout=2)
    refused = nobody.create(SUMMARISE.request(TEXT)).error
    assert isinstance(refused, TransientError) and refused.code == "connection_error"


def test_a_long_shared_prefix_is_cached_and_billed_at_the_cached_rate(
        simulator: SimulatorProcess) -> None:
    # The simulator caches like the API: a prefix of 1,024+ tokens seen recently under the
    # same prompt_cache_key.
    long_rules = " ".join(f"Rule {i}: report every amount with its currency." for i in range(160))
    pipeline = dataclasses.replace(SUMMARISE, instructions=long_rules)
    client = client_for(simulator)
    cold = client.create(pipeline.request(TEXT))
    warm = client.create(pipeline.request(TEXT + " Second document."))
    assert cold.error is None and warm.error is None
    assert cold.usage.cached_tokens == 0
    assert warm.usage.cached_tokens >= 1024 and warm.usage.cached_tokens % 128 == 0
    assert warm.usage.cached_tokens < warm.usage.input_tokens
    at_full_price = Usage(input_tokens=warm.usage.input_tokens,
                          output_tokens=warm.usage.output_tokens)
    saved = cost_usd(pipeline.model, at_full_price) - cost_usd(pipeline.model, warm.usage)
    price = price_for(pipeline.model)
    assert price is not None
    assert saved == warm.usage.cached_tokens * (price.input - price.cached_input) / 1_000_000
    other_lane = client.create(pipeline.request(TEXT, cache_shards=7))
    assert other_lane.usage.cached_tokens == 0, "another key starts cold"


def test_flex_capacity_refusal_is_not_a_rate_limit(simulator: SimulatorProcess) -> None:
    from workers.errors import CapacityUnavailableError

    simulator.configure(flex_unavailable_rate=1.0)
    flex = SUMMARISE.request(TEXT) | {"service_tier": "flex"}
    refused = client_for(simulator).create(flex)
    assert isinstance(refused.error, CapacityUnavailableError), refused.error
    assert not isinstance(refused.error, RateLimitedError)
    assert refused.error.http_status == 429 and refused.usage.input_tokens == 0
    # Standard-tier calls are not affected by a flex shortage.
    assert client_for(simulator).create(SUMMARISE.request(TEXT)).error is None
    simulator.configure(flex_unavailable_rate=0.0)
    answered = client_for(simulator).create(flex)
    assert answered.error is None


def test_tools_the_api_runs_leave_their_calls_beside_the_answer(
        simulator: SimulatorProcess) -> None:
    body = {**SUMMARISE.request(TEXT), "tools": [{"type": "web_search"},
                                                 {"type": "file_search",
                                                  "vector_store_ids": ["vs_1"]}]}
    result = client_for(simulator).create(body)
    assert result.error is None, result.error
    assert SUMMARISE.validate_output(result.output_text)["summary"]


def test_a_call_of_a_function_tool_is_a_tool_call_never_an_empty_answer(
        simulator: SimulatorProcess) -> None:
    lookup = {"type": "function", "name": "lookup_customer", "strict": True,
              "parameters": {"type": "object", "properties": {"name": {"type": "string"}},
                             "required": ["name"], "additionalProperties": False}}
    client = client_for(simulator)
    for choice in ("required", {"type": "function", "name": "lookup_customer"}):
        called = client.create({**SUMMARISE.request(TEXT), "tools": [lookup],
                                "tool_choice": choice}).error
        assert isinstance(called, BadOutputError) and called.code == "tool_call", called
        assert "the model called lookup_customer instead of answering" in called.message
    # The document names the function: the model calls it unless told not to.
    text = f"{TEXT} Please lookup_customer for Globex."
    named = client.create({**SUMMARISE.request(text), "tools": [lookup]}).error
    assert isinstance(named, BadOutputError) and named.code == "tool_call"
    answered = client.create({**SUMMARISE.request(text), "tools": [lookup],
                              "tool_choice": "none"})
    assert answered.error is None and SUMMARISE.validate_output(answered.output_text)
