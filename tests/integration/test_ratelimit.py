"""The fleet-wide limiter and breaker on a real Redis, with an injected clock."""

from __future__ import annotations

import bisect
import heapq
import itertools
import multiprocessing
import time
import uuid
from multiprocessing.queues import Queue

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from workers.admission.breaker import CircuitBreaker
from workers.admission.limiter import Budget, RateLimiter, cooldown_seconds, limit_key
from workers.admission.scripts import ScriptBatch
from workers.admission.throttle import Park, Throttle, Ticket
from workers.settings import Settings

T0 = 1_000.0


@pytest.fixture
def client(broker_url: str) -> redis.Redis:
    return redis.Redis.from_url(broker_url)


def fresh_key() -> str:
    return f"docpipe:ratelimit:test:{uuid.uuid4().hex}"


class ApiBucket:
    """The API's own limiter: a full minute of capacity, refilled continuously."""

    def __init__(self, per_minute: float) -> None:
        self.cap = per_minute
        self.level = per_minute
        self.rate = per_minute / 60
        self.t = T0

    def advance(self, t: float) -> None:
        self.level = min(self.cap, self.level + (t - self.t) * self.rate)
        self.t = t


#: 429s from elsewhere: (seconds after T0, cooldown seconds).
cooldowns = st.lists(st.tuples(st.floats(min_value=0, max_value=60),
                               st.floats(min_value=0.001, max_value=10)), max_size=6)

calls = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=3),  # time since the previous call was asked for
        st.integers(min_value=1, max_value=6000),  # estimated tokens
        st.integers(min_value=-3000, max_value=1500),  # real minus estimate
        st.floats(min_value=0.01, max_value=4),  # latency until the true-up
    ),
    min_size=1, max_size=80,
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    calls=calls,
    rpm=st.integers(min_value=1, max_value=600),
    tpm=st.integers(min_value=6000, max_value=300_000),
    burst=st.floats(min_value=0.2, max_value=5),
    max_wait=st.floats(min_value=0, max_value=120),
    cooldowns=cooldowns,
    group=st.integers(min_value=1, max_value=16),
)
# A call that used more than its estimate, settling while a second call waits for its slot
# (found by Hypothesis in CI: the waiting call met an API bucket one token short).
@example(calls=[(0.0, 4501, 1500, 1.0), (0.0, 101, 0, 1.0)], rpm=20, tpm=6000, burst=5.0,
         max_wait=2.0, cooldowns=[], group=1)
# A slot set by the token budget, so the request budget (one request of capacity) would
# have refilled past its cap before the call.
@example(calls=[(0.0, 1, 1, 1.0), (1.0, 5701, 0, 1.0), (1.0, 1, 0, 1.0)], rpm=1, tpm=6000,
         burst=1.0, max_wait=62.0, cooldowns=[(2.0, 3.0)], group=1)
# A 429 while true-ups have left the API's bucket in debt.
@example(calls=[(0.0, 5373, 0, 1.0), (1.0, 114, 459, 1.0), (2.0, 185, 0, 1.0),
                (1.0, 1, 754, 0.25)], rpm=21, tpm=6000, burst=1.0, max_wait=3.0,
         cooldowns=[(6.0, 1.0)], group=1)
def test_never_grants_more_than_the_api_allows(
    client: redis.Redis, calls: list[tuple[float, int, int, float]], rpm: int, tpm: int,
    burst: float, max_wait: float, cooldowns: list[tuple[float, float]], group: int,
) -> None:
    """Calls asked for at the same moment are reserved as one group (up to ``group``), in one
    round trip, as a group engine admits them."""
    limiter = RateLimiter(client, burst_seconds=burst)
    key, budget = fresh_key(), Budget(rpm=rpm, tpm=tpm)
    api_requests, api_tokens = ApiBucket(rpm), ApiBucket(tpm)
    order = itertools.count()
    events: list[tuple[float, int, str, int, int, float]] = []
    t = T0
    for gap, estimate, delta, latency in calls:
        t += gap
        delta = max(delta, -estimate)  # a call cannot use fewer than zero tokens
        heapq.heappush(events, (t, next(order), "ask", estimate, delta, latency))
    for at, seconds in cooldowns:
        heapq.heappush(events, (T0 + at, next(order), "429", 0, 0, seconds))
    epochs: dict[int, int] = {}


    while events:
        when, seq, kind, estimate, delta, latency = heapq.heappop(events)
        if kind == "ask":
            asks = [(estimate, delta, latency)]
            while len(asks) < group and events and events[0][0] == when and \
                    events[0][2] == "ask":
                _, _, _, *ask = heapq.heappop(events)
                asks.append((ask[0], ask[1], ask[2]))
            if len(asks) == 1:
                grants = [limiter.acquire(key, tokens=estimate, budget=budget,
                                          max_wait=max_wait, now=when)]
            else:
                grants = limiter.acquire_many([(key, a[0], budget) for a in asks],
                                              max_wait=max_wait, now=when)
            for (estimate, delta, latency), grant in zip(asks, grants, strict=True):
                if grant.too_large:
                    assert estimate > tpm
                elif grant.reserved:
                    assert grant.wait <= max_wait + 1e-9
                    slot = next(order)
                    epochs[slot] = grant.epoch
                    heapq.heappush(events, (when + grant.wait, slot, "call", estimate, delta,
                                            latency))
        elif kind == "429":
            # Any worker's 429: the whole fleet cools down.
            limiter.cooldown(key, latency, budget=budget, now=when)
        elif kind == "call" and epochs[seq] != limiter.epoch(key):
            # A cooldown voided this slot while its worker waited: it asks again.
            heapq.heappush(events, (when, next(order), "ask", estimate, delta, latency))
        elif kind == "call":
            for bucket in (api_requests, api_tokens):
                bucket.advance(when)
            # The property: the API admits every call made at its slot.
            assert api_requests.level >= 1 - 1e-6
            assert api_tokens.level >= estimate - 1e-6 * tpm
            api_requests.level -= 1
            api_tokens.level -= estimate

            heapq.heappush(events, (when + latency, next(order), "settle", estimate, delta, 0))
        else:
            api_tokens.advance(when)
            api_tokens.level -= delta  # the API trues up to the real usage...
            limiter.settle(key, budget=budget, token_delta=delta, now=when)  # ...and so do we


def _worker(url: str, key: str, rpm: int, seconds: float, out: Queue[list[float]]) -> None:
    """One worker process: reserve, wait for the slot, call; for ``seconds``."""
    limiter = RateLimiter(redis.Redis.from_url(url))
    starts: list[float] = []
    end = time.time() + seconds
    while time.time() < end:
        grant = limiter.acquire(key, tokens=1, budget=Budget(rpm=rpm), max_wait=5)
        time.sleep(grant.wait)
        if grant.reserved:
            starts.append(time.time())
    out.put(starts)


def test_worker_processes_share_one_budget_fairly(broker_url: str) -> None:
    rate, seconds, workers = 20.0, 4.0, 4  # 1,200 RPM
    ctx = multiprocessing.get_context("spawn")
    out: Queue[list[float]] = ctx.Queue()
    key = fresh_key()
    procs = [ctx.Process(target=_worker, args=(broker_url, key, int(rate * 60), seconds, out))
             for _ in range(workers)]
    for proc in procs:
        proc.start()
    per_worker = [out.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=10)
    starts = sorted(t for one in per_worker for t in one)
    # Never above the rate plus the one-second burst, in any one-second window or overall.
    for i, start in enumerate(starts):
        in_window = bisect.bisect_right(starts, start + 1.0) - i
        assert in_window <= 2 * rate + 1
    assert len(starts) <= rate * (starts[-1] - starts[0]) + rate + 1
    # All of it is used, and shared evenly: slots go first come, first served.
    assert len(starts) >= rate * (seconds - 1.5)
    counts = [len(one) for one in per_worker]
    assert min(counts) >= 0.7 * sum(counts) / workers, counts


def test_smooth_start_no_minute_long_burst(client: redis.Redis) -> None:
    limiter = RateLimiter(client, burst_seconds=1.0)
    key, budget = fresh_key(), Budget(rpm=600, tpm=10_000_000)
    immediate = sum(
        limiter.acquire(key, tokens=10, budget=budget, max_wait=0, now=T0).reserved
        for _ in range(100)
    )
    assert immediate == 10  # one second of a 600 RPM budget, not 600


def test_reservations_are_spaced_evenly(client: redis.Redis) -> None:
    limiter = RateLimiter(client, burst_seconds=1.0)
    key, budget = fresh_key(), Budget(rpm=60)
    waits = [limiter.acquire(key, tokens=1, budget=budget, max_wait=100, now=T0).wait
             for _ in range(5)]
    assert waits == pytest.approx([0, 1, 2, 3, 4])


def test_a_long_wait_reserves_nothing(client: redis.Redis) -> None:
    limiter = RateLimiter(client, burst_seconds=1.0)
    key, budget = fresh_key(), Budget(rpm=60)
    assert limiter.acquire(key, tokens=1, budget=budget, max_wait=0, now=T0).reserved
    parked = limiter.acquire(key, tokens=1, budget=budget, max_wait=0.5, now=T0)
    assert not parked.reserved and parked.wait == pytest.approx(1)
    # Nothing was charged for the parked call: the next one waits 1 s, not 2.
    assert limiter.acquire(key, tokens=1, budget=budget, max_wait=5, now=T0).wait == \
        pytest.approx(1)


def test_an_overrun_voids_the_promised_slots_and_forgives_them(client: redis.Redis) -> None:
    limiter = RateLimiter(client, burst_seconds=1.0)
    key, budget = fresh_key(), Budget(tpm=6000)  # 100 tokens a second
    first = limiter.acquire(key, tokens=100, budget=budget, max_wait=60, now=T0)
    promised = limiter.acquire(key, tokens=100, budget=budget, max_wait=60, now=T0)
    assert first.wait == 0 and promised.wait == pytest.approx(1)
    # The first call used 300 more tokens than estimated: the API holds the promised slot's
    # tokens no longer, so the slot is void...
    limiter.settle(key, budget=budget, token_delta=300, now=T0 + 0.5)
    assert limiter.epoch(key) != promised.epoch
    # ...and its charge is forgiven: asking again waits for the overrun only, not for it twice.
    again = limiter.acquire(key, tokens=100, budget=budget, max_wait=60, now=T0 + 0.5)
    assert again.wait == pytest.approx(3.5)  # (300 overrun + 100 asked - 50 refilled) / 100


def test_a_refund_keeps_the_promised_slots(client: redis.Redis) -> None:
    limiter = RateLimiter(client, burst_seconds=1.0)
    key, budget = fresh_key(), Budget(tpm=6000)
    limiter.acquire(key, tokens=100, budget=budget, max_wait=60, now=T0)
    promised = limiter.acquire(key, tokens=100, budget=budget, max_wait=60, now=T0)
    limiter.settle(key, budget=budget, token_delta=-80, now=T0 + 0.5)
    assert limiter.epoch(key) == promised.epoch


def test_a_request_above_the_tpm_limit_is_too_large(client: redis.Redis) -> None:
    limiter = RateLimiter(client)
    grant = limiter.acquire(fresh_key(), tokens=5000, budget=Budget(tpm=4000), max_wait=60,
                            now=T0)
    assert grant.too_large and not grant.reserved


def test_learns_limits_from_headers_and_follows_remaining(client: redis.Redis) -> None:
    limiter = RateLimiter(client, burst_seconds=2.0)
    key, unknown = fresh_key(), Budget()
    assert limiter.acquire(key, tokens=100, budget=unknown, max_wait=0, now=T0).reserved
    limiter.settle(key, budget=unknown, now=T0, headers={
        "x-ratelimit-limit-requests": "60", "x-ratelimit-limit-tokens": "60000",
        "x-ratelimit-remaining-requests": "59", "x-ratelimit-remaining-tokens": "0",
    })
    state = limiter.state(key)
    assert (state["lrpm"], state["ltpm"]) == (60, 60000)
    assert state["t"] == 0  # the API said nothing is left, so nothing is
    wait = limiter.acquire(key, tokens=1000, budget=unknown, max_wait=60, now=T0).wait
    assert wait == pytest.approx(1.0)  # 1000 tokens at 1000 tokens/s


def test_bogus_azure_headers_are_ignored(client: redis.Redis) -> None:
    limiter = RateLimiter(client)
    key = fresh_key()
    limiter.settle(key, budget=Budget(tpm=60000), now=T0, headers={
        "x-ratelimit-limit-tokens": "-1", "x-ratelimit-remaining-tokens": "0"})
    assert limiter.state(key)["t"] == pytest.approx(1000)


def test_a_429_cools_the_whole_fleet_down(client: redis.Redis) -> None:
    limiter = RateLimiter(client)
    key, budget = fresh_key(), Budget(rpm=6000, tpm=10_000_000)
    limiter.cooldown(key, 7.5, now=T0)
    other_worker = RateLimiter(client)
    assert other_worker.acquire(key, tokens=1, budget=budget, max_wait=60, now=T0 + 1).wait == \
        pytest.approx(6.5)


def test_after_a_429_the_fleet_queues_behind_the_cooldown_at_the_budgets_pace(
    client: redis.Redis,
) -> None:
    limiter = RateLimiter(client)
    key, budget = fresh_key(), Budget(rpm=60, tpm=10_000_000)
    before = limiter.acquire(key, tokens=1, budget=budget, max_wait=60, now=T0)
    assert before.reserved and before.wait == 0
    limiter.cooldown(key, 5, budget=budget, now=T0)
    assert limiter.epoch(key) == before.epoch + 1  # reservations made before are void
    waits = [limiter.acquire(key, tokens=1, budget=budget, max_wait=60, now=T0 + 1).wait
             for _ in range(3)]
    # One call when the cooldown ends, then one a second: not three at once.
    assert waits == pytest.approx([4.0, 5.0, 6.0], abs=1e-3)


def _headers(rpm: int, tpm: int, requests_left: float, tokens_left: float) -> dict[str, str]:
    return {"x-ratelimit-limit-requests": str(rpm), "x-ratelimit-limit-tokens": str(tpm),
            "x-ratelimit-remaining-requests": str(max(0, int(requests_left))),
            "x-ratelimit-remaining-tokens": str(max(0, int(tokens_left)))}


class TestLearnedBudgets:
    """A budget nobody configured: one probe, then the API's headers, as a configured one."""

    def test_one_probe_goes_and_the_rest_wait_for_its_headers(self, client: redis.Redis
                                                              ) -> None:
        limiter, key, unknown = RateLimiter(client), fresh_key(), Budget()
        probe = limiter.acquire(key, tokens=10, budget=unknown, max_wait=5, now=T0)
        assert probe.reserved and probe.wait == 0 and not probe.learning
        # Every other call in the fleet, in any process, waits: nothing is reserved for it.
        for other in (limiter, RateLimiter(client)):
            waiting = other.acquire(key, tokens=10, budget=unknown, max_wait=5, now=T0 + 0.1)
            assert waiting.learning and not waiting.reserved
            assert waiting.wait == pytest.approx(0.05)
        # Asked again later, it waits about half as long as the probe has been out.
        assert limiter.acquire(key, tokens=10, budget=unknown, max_wait=5,
                               now=T0 + 3).wait == pytest.approx(1.5)
        assert limiter.acquire(key, tokens=10, budget=unknown, max_wait=5,
                               now=T0 + 30).wait == pytest.approx(2)
        limiter.settle(key, budget=unknown, answered=True, request_id="req_probe",
                       headers=_headers(60, 600_000, 59, 599_990), now=T0 + 30)
        # Now paced as a configured 60 RPM: one second's burst, then a call a second.
        waits = [limiter.acquire(key, tokens=10, budget=unknown, max_wait=60, now=T0 + 30)
                 for _ in range(3)]
        assert all(g.reserved and not g.learning for g in waits)
        assert [g.wait for g in waits] == pytest.approx([0, 1, 2])
        learned = limiter.learned(key, now=T0 + 30)
        assert learned is not None and (learned.rpm, learned.tpm) == (60, 600_000)
        assert (learned.source, learned.request_id, learned.at) == ("headers", "req_probe",
                                                                    T0 + 30)

    def test_a_success_without_limit_headers_means_no_limit(self, client: redis.Redis
                                                            ) -> None:
        limiter, key, unknown = RateLimiter(client), fresh_key(), Budget()
        assert limiter.acquire(key, tokens=10, budget=unknown, max_wait=0, now=T0).reserved
        limiter.settle(key, budget=unknown, answered=True, headers={}, now=T0 + 0.2)
        grants = [limiter.acquire(key, tokens=10, budget=unknown, max_wait=0, now=T0 + 0.2)
                  for _ in range(500)]
        assert all(g.reserved and g.wait == 0 for g in grants)
        learned = limiter.learned(key, now=T0 + 0.2)
        assert learned is not None and learned.source == "none"
        assert (learned.rpm, learned.tpm) == (None, None)

    def test_an_error_without_headers_lets_the_next_call_probe(self, client: redis.Redis
                                                               ) -> None:
        limiter, key, unknown = RateLimiter(client), fresh_key(), Budget()
        assert limiter.acquire(key, tokens=10, budget=unknown, max_wait=0, now=T0).reserved
        limiter.settle(key, budget=unknown, answered=False, headers={}, now=T0 + 1)  # a 502
        assert limiter.learned(key, now=T0 + 1) is None
        second = limiter.acquire(key, tokens=10, budget=unknown, max_wait=0, now=T0 + 1)
        assert second.reserved and not second.learning
        assert limiter.acquire(key, tokens=10, budget=unknown, max_wait=0,
                               now=T0 + 1).learning

    def test_a_probe_that_never_answers_is_given_up_after_its_hold(self, client: redis.Redis
                                                                   ) -> None:
        limiter, key, unknown = RateLimiter(client, probe_hold=30), fresh_key(), Budget()
        assert limiter.acquire(key, tokens=10, budget=unknown, max_wait=0, now=T0).reserved
        assert limiter.acquire(key, tokens=10, budget=unknown, max_wait=0,
                               now=T0 + 29).learning
        # Its process died: after the hold, another call probes.
        assert limiter.acquire(key, tokens=10, budget=unknown, max_wait=0,
                               now=T0 + 31).reserved

    def test_a_learned_budget_expires_and_is_probed_for_again(self, client: redis.Redis
                                                              ) -> None:
        limiter, key, unknown = RateLimiter(client, learned_ttl=600), fresh_key(), Budget()
        limiter.acquire(key, tokens=10, budget=unknown, max_wait=0, now=T0)
        limiter.settle(key, budget=unknown, answered=True,
                       headers=_headers(300, 1_000_000, 299, 999_990), now=T0)
        assert limiter.learned(key, now=T0 + 599) is not None
        assert limiter.learned(key, now=T0 + 601) is None
        # Renewed by every answer that names the limits...
        limiter.settle(key, budget=unknown, answered=True,
                       headers=_headers(300, 1_000_000, 299, 999_990), now=T0 + 500)
        assert limiter.learned(key, now=T0 + 1000) is not None
        # ...and once it is older than the TTL, one call probes before the fleet goes on.
        probe = limiter.acquire(key, tokens=10, budget=unknown, max_wait=0, now=T0 + 1101)
        assert probe.reserved and not probe.learning
        assert limiter.acquire(key, tokens=10, budget=unknown, max_wait=0,
                               now=T0 + 1101).learning

    def test_a_limit_that_changes_voids_the_slots_promised_at_the_old_pace(
        self, client: redis.Redis
    ) -> None:
        limiter, key, unknown = RateLimiter(client), fresh_key(), Budget()
        limiter.acquire(key, tokens=10, budget=unknown, max_wait=0, now=T0)
        limiter.settle(key, budget=unknown, answered=True, headers=_headers(120, 10**7, 119,
                                                                            10**7), now=T0)
        promised = [limiter.acquire(key, tokens=10, budget=unknown, max_wait=60, now=T0)
                    for _ in range(4)]
        assert [g.wait for g in promised] == pytest.approx([0, 0, 0.5, 1.0])
        # The API now says 60 RPM: the promised slots are void, and the calls queue again at
        # the new pace, behind the two that went (the burst is spent: a call a second).
        limiter.settle(key, budget=unknown, answered=True, headers=_headers(60, 10**7, 57,
                                                                            10**7), now=T0)
        assert limiter.epoch(key) != promised[-1].epoch
        again = [limiter.acquire(key, tokens=10, budget=unknown, max_wait=60, now=T0).wait
                 for _ in range(2)]
        assert again == pytest.approx([1.0, 2.0])

    def test_a_probe_whose_call_is_not_sent_is_given_back(self, client: redis.Redis) -> None:
        limiter, key, unknown = RateLimiter(client), fresh_key(), Budget()
        probe = limiter.acquire(key, tokens=10, budget=unknown, max_wait=0, now=T0)
        assert probe.probe is not None
        assert limiter.acquire(key, tokens=10, budget=unknown, max_wait=0, now=T0).learning
        limiter.release_probe(key, "not this probe")  # another's: kept
        assert limiter.acquire(key, tokens=10, budget=unknown, max_wait=0, now=T0).learning
        limiter.release_probe(key, probe.probe)
        again = limiter.acquire(key, tokens=10, budget=unknown, max_wait=0, now=T0)
        assert again.reserved and again.probe is not None

    def test_the_breaker_does_not_hold_a_probe_it_stopped(self, client: redis.Redis,
                                                          broker_url: str) -> None:
        settings = Settings(broker_url=broker_url, breaker_min_calls=1, breaker_window=1,
                            openai_base_url=f"http://{uuid.uuid4().hex}.test/v1")
        breaker = CircuitBreaker(client, window=1, min_calls=1, failure_ratio=1.0,
                                 open_seconds=30)
        throttle = Throttle(settings, RateLimiter(client), breaker)
        breaker.record(throttle.endpoint, ok=False)  # open for 30 s
        parked = throttle.before_calls([{"model": "gpt-4.1-mini", "input": "x"}] * 3)
        assert [type(a) for a in parked] == [Park] * 3
        # The breaker closes: the first call to come probes the budget, as if none had asked.
        client.delete(CircuitBreaker.key(throttle.endpoint))
        first, second = throttle.before_calls([{"model": "gpt-4.1-mini", "input": "x"}] * 2)
        assert isinstance(first, Ticket) and first.probe is not None and not first.learning
        assert isinstance(second, Ticket) and second.learning

    def test_an_open_breaker_reserves_no_slot_and_a_half_open_one_the_probes_only(
            self, client: redis.Redis, broker_url: str) -> None:
        # 60 RPM with a 1 s burst: one request now, then one a second. Slots reserved for
        # calls that park would push every later call back.
        settings = Settings(broker_url=broker_url,
                            model_limits={"gpt-4.1-mini": {"rpm": 60, "tpm": 10**7}},
                            openai_base_url=f"http://{uuid.uuid4().hex}.test/v1")
        breaker = CircuitBreaker(client, window=1, min_calls=1, failure_ratio=1.0,
                                 open_seconds=30)
        limiter = RateLimiter(client)
        throttle = Throttle(settings, limiter, breaker)
        body = {"model": "gpt-4.1-mini", "input": "x"}
        breaker.record(throttle.endpoint, ok=False)  # open for 30 s
        for _ in range(3):
            assert [type(a) for a in throttle.before_calls([body] * 4)] == [Park] * 4
        key = limit_key(throttle.endpoint, "gpt-4.1-mini")
        assert limiter.state(key) == {}, "nothing reserved while open"

        # Half open: this group's first call probes, and only its slot is reserved.
        client.hset(CircuitBreaker.key(throttle.endpoint), "open_until", "1")
        probe, *others = throttle.before_calls([body] * 4)
        assert isinstance(probe, Ticket) and probe.waited == 0
        assert [type(a) for a in others] == [Park] * 3
        assert [type(a) for a in throttle.before_calls([body] * 2)] == [Park] * 2
        # The probe succeeds and the breaker closes: the next call waits one slot, not four.
        breaker.record(throttle.endpoint, ok=True)
        (after,) = throttle.before_calls([body])
        assert isinstance(after, Ticket) and after.waited == pytest.approx(1.0, abs=0.2)

    def test_a_configured_budget_needs_no_probe(self, client: redis.Redis) -> None:
        limiter, key = RateLimiter(client), fresh_key()
        grants = [limiter.acquire(key, tokens=10, budget=Budget(rpm=600), max_wait=0, now=T0)
                  for _ in range(10)]
        assert all(g.reserved and not g.learning for g in grants)


#: Calls from several worker processes: (process, seconds since the previous ask, estimated
#: tokens, real minus estimate, latency until the answer).
fleet_calls = st.lists(
    st.tuples(st.integers(min_value=0, max_value=3), st.floats(min_value=0, max_value=2),
              st.integers(min_value=1, max_value=3000),
              st.integers(min_value=-1000, max_value=800),
              st.floats(min_value=0.01, max_value=3)),
    min_size=1, max_size=60,
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=fleet_calls, rpm=st.integers(min_value=1, max_value=600),
       tpm=st.integers(min_value=6000, max_value=300_000),
       ttl=st.floats(min_value=1, max_value=120), max_wait=st.floats(min_value=0, max_value=30))
def test_learned_budgets_never_grant_more_than_the_api_allows(
    client: redis.Redis, calls: list[tuple[int, float, int, int, float]], rpm: int, tpm: int,
    ttl: float, max_wait: float,
) -> None:
    """Four processes, each with its own limiter, and no budget configured: every budget is
    learned from the API's answers (limits and what remains, as the API sends them), is
    forgotten after ``ttl`` and probed for again. The API admits every call made."""
    limiters = [RateLimiter(client, burst_seconds=1.0, learned_ttl=ttl, probe_hold=10)
                for _ in range(4)]
    key, unknown = fresh_key(), Budget()
    api_requests, api_tokens = ApiBucket(rpm), ApiBucket(tpm)
    order = itertools.count()
    events: list[tuple[float, int, str, int, int, int, float]] = []
    t = T0
    for process, gap, estimate, delta, latency in calls:
        t += gap
        estimate = min(estimate, tpm)
        heapq.heappush(events, (t, next(order), "ask", process, estimate,
                                max(delta, -estimate), latency))
    epochs: dict[int, int] = {}
    while events:
        when, seq, kind, process, estimate, delta, latency = heapq.heappop(events)
        limiter = limiters[process]
        if kind == "ask":
            grant = limiter.acquire(key, tokens=estimate, budget=unknown, max_wait=max_wait,
                                    now=when)
            assert not grant.too_large
            if grant.learning or not grant.reserved:
                # Waiting for a probe's headers, or parked: ask again later.
                heapq.heappush(events, (when + max(grant.wait, 0.05), next(order), "ask",
                                        process, estimate, delta, latency))
            else:
                slot = next(order)
                epochs[slot] = grant.epoch
                heapq.heappush(events, (when + grant.wait, slot, "call", process, estimate,
                                        delta, latency))
        elif kind == "call" and epochs[seq] != limiter.epoch(key):
            heapq.heappush(events, (when, next(order), "ask", process, estimate, delta,
                                    latency))
        elif kind == "call":
            for bucket in (api_requests, api_tokens):
                bucket.advance(when)
            assert api_requests.level >= 1 - 1e-6
            assert api_tokens.level >= estimate - 1e-6 * tpm
            api_requests.level -= 1
            api_tokens.level -= estimate
            heapq.heappush(events, (when + latency, next(order), "settle", process, estimate,
                                    delta, 0))
        else:
            for bucket in (api_requests, api_tokens):
                bucket.advance(when)
            api_tokens.level -= delta
            limiter.settle(key, budget=unknown, token_delta=delta, answered=True, now=when,
                           headers=_headers(rpm, tpm, api_requests.level, api_tokens.level))


@pytest.mark.parametrize(("headers", "retry_after", "expected"), [
    ({}, 12.5, 12.5),
    ({"x-ratelimit-reset-requests": "20ms", "x-ratelimit-reset-tokens": "6m0s"}, None, 60.0),
    ({"x-ratelimit-reset-tokens": "1.5s"}, None, 1.5),
    ({}, None, 1.0),
])
def test_cooldown_honours_retry_after_then_reset_headers(
    headers: dict[str, str], retry_after: float | None, expected: float
) -> None:
    assert cooldown_seconds(headers, retry_after) == expected


class TestBreaker:
    def test_opens_when_most_recent_calls_fail_and_probes_one_at_a_time(
        self, client: redis.Redis
    ) -> None:
        breaker = CircuitBreaker(client, window=10, min_calls=5, failure_ratio=0.8,
                                 open_seconds=10)
        endpoint = f"test-{uuid.uuid4().hex}"
        for i in range(4):
            assert breaker.record(endpoint, ok=False, now=T0 + i) == "closed"
        assert breaker.record(endpoint, ok=False, now=T0 + 4) == "open"
        blocked = breaker.allow(endpoint, now=T0 + 5)
        assert not blocked.allowed and blocked.wait == pytest.approx(9)
        probe = breaker.allow(endpoint, now=T0 + 15)
        assert probe.allowed and probe.probe
        assert not breaker.allow(endpoint, now=T0 + 15.1).allowed  # one probe at a time
        assert breaker.record(endpoint, ok=False, now=T0 + 16) == "open"
        assert breaker.allow(endpoint, now=T0 + 17).wait == pytest.approx(19)  # doubled
        assert breaker.allow(endpoint, now=T0 + 36).probe
        assert breaker.record(endpoint, ok=True, now=T0 + 37) == "closed"
        assert breaker.allow(endpoint, now=T0 + 37).allowed

    def test_a_few_failures_among_successes_do_not_open_it(self, client: redis.Redis) -> None:
        breaker = CircuitBreaker(client, window=10, min_calls=5, failure_ratio=0.8)
        endpoint = f"test-{uuid.uuid4().hex}"
        for i in range(30):
            assert breaker.record(endpoint, ok=i % 3 != 0, now=T0 + i) == "closed"


class TestScriptBatch:
    def test_settle_and_record_in_one_batch_equal_them_one_by_one(
            self, client: redis.Redis) -> None:
        one, batched = fresh_key(), fresh_key()
        limiter = RateLimiter(client, burst_seconds=60)
        breaker = CircuitBreaker(client, min_calls=1, window=1)
        budget = Budget(rpm=60, tpm=6000)
        for key in (one, batched):
            assert limiter.acquire(key, tokens=100, budget=budget, max_wait=0, now=1000).reserved
        limiter.settle(one, budget=budget, token_delta=50, now=1001)
        limiter.cooldown(one, 3, budget=budget, now=1001)
        assert breaker.record("one", ok=False, now=1001) == "open"

        before = client.hgetall(batched)
        batch = ScriptBatch(client)
        limiter.settle(batched, budget=budget, token_delta=50, now=1001, batch=batch)
        limiter.cooldown(batched, 3, budget=budget, now=1001, batch=batch)
        assert breaker.record("batched", ok=False, now=1001, batch=batch) is None
        assert client.hgetall(batched) == before  # nothing ran before execute
        assert batch.execute()[2] == b"open"
        assert client.hgetall(batched) == client.hgetall(one)
        assert breaker.state("batched") == breaker.state("one")

    def test_scripts_redis_forgot_run_once_each(self, client: redis.Redis) -> None:
        # A restarted Redis has no scripts: each is loaded and run again on its own, and the
        # ones that ran are not run twice.
        key = fresh_key()
        limiter = RateLimiter(client, burst_seconds=60)
        breaker = CircuitBreaker(client, min_calls=5, window=5)
        budget = Budget(rpm=60, tpm=6000)
        assert limiter.acquire(key, tokens=100, budget=budget, max_wait=0, now=1000).reserved
        client.script_flush()
        for _ in range(2):
            batch = ScriptBatch(client)
            limiter.settle(key, budget=budget, token_delta=100, now=1000, batch=batch)
            breaker.record("forgetful", ok=True, now=1000, batch=batch)
            batch.execute()
        # A full bucket (6,000), the 100-token charge, two true-ups of +100; two outcomes.
        assert float(client.hget(key, "t") or 0) == pytest.approx(6000 - 100 - 200)
        assert client.llen(CircuitBreaker.key("forgetful") + ":window") == 2
