"""Admission to the model API: the circuit breaker, then the fleet-wide rate limit.

:meth:`Throttle.before_call` either admits a call, after an inline wait of at most
``max_inline_wait_seconds``, or tells the caller to park the item for longer. Parking does not
hold a Celery slot. :meth:`Throttle.after_call` feeds what the API said back into the limiter
and the breaker.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import redis

from pipelines.tokens import admission_tokens
from workers.admission.breaker import CircuitBreaker
from workers.admission.limiter import (
    Budget,
    Grant,
    RateLimiter,
    cooldown_seconds,
    grant_of,
    limit_key,
)
from workers.admission.scripts import ScriptBatch, redis_client
from workers.errors import RateLimitedError, TransientError
from workers.llm.client import CallResult
from workers.runtime.process_local import PerProcess
from workers.settings import Settings

log = logging.getLogger("docpipe.throttle")


@dataclass(frozen=True)
class Ticket:
    """An admitted call: what it reserved, and how long it waited for that."""

    key: str | None
    endpoint: str
    budget: Budget
    estimate: int
    #: Seconds waited for the slot (:meth:`Throttle.before_call`), or still to wait before
    #: it starts (:meth:`Throttle.before_calls`).
    waited: float
    #: The limiter's epoch when the slot was reserved (see :meth:`Throttle.still_valid`).
    epoch: int = 0


@dataclass(frozen=True)
class Park:
    """Not now: come back in ``seconds``. ``reason`` is ``budget`` or ``circuit_open``."""

    seconds: float
    reason: str


@dataclass(frozen=True)
class TooLarge:
    """The request alone needs more tokens than the per-minute limit allows."""

    estimate: int
    tpm: int | None


def endpoint_of(base_url: str | None) -> str:
    """A stable name for the API endpoint, e.g. ``api.openai.com/v1``."""
    parts = urlsplit(base_url or "https://api.openai.com/v1")
    return f"{parts.netloc}{parts.path.rstrip('/')}"


@dataclass(frozen=True)
class LimitState:
    """One (endpoint, model) budget as the fleet sees it now."""

    key: str
    rpm: int | None
    tpm: int | None
    #: ``settings`` when configured, ``headers`` when learned from ``x-ratelimit-limit-*``.
    source: str
    requests_available: float
    tokens_available: float
    cooldown_seconds: float


@dataclass(frozen=True)
class ThrottleState:
    """Everything ``docpipe limits`` shows: budgets, levels, cooldowns, the breaker."""

    endpoint: str
    limits: list[LimitState]
    breaker: str
    breaker_open_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Throttle:
    """Breaker and limiter, for one process."""

    def __init__(self, settings: Settings, limiter: RateLimiter, breaker: CircuitBreaker) -> None:
        self.settings = settings
        self.limiter = limiter
        self.breaker = breaker
        self.endpoint = endpoint_of(settings.openai_base_url)

    def budget(self, model: str) -> Budget:
        limits = self.settings.model_limits.get(model)
        return Budget(rpm=limits.rpm, tpm=limits.tpm) if limits else Budget()

    def snapshot(self) -> ThrottleState:
        """The fleet's limiter and breaker state, read from Redis."""
        now = time.time()
        rows = []
        for key in self.limiter.keys():
            state = self.limiter.state(key)
            configured = self.budget(key.rsplit(":", 1)[-1])
            learned_rpm, learned_tpm = state.get("lrpm"), state.get("ltpm")
            rows.append(LimitState(
                key=key,
                rpm=configured.rpm or (int(learned_rpm) if learned_rpm else None),
                tpm=configured.tpm or (int(learned_tpm) if learned_tpm else None),
                source="settings" if configured.rpm or configured.tpm else "headers",
                requests_available=round(state.get("r", 0.0), 2),
                tokens_available=round(state.get("t", 0.0)),
                cooldown_seconds=round(max(0.0, state.get("cool", 0.0) - now), 2),
            ))
        breaker = self.breaker.state(self.endpoint)
        open_for = max(0.0, breaker.get("open_until", 0.0) - now)
        status = "open" if open_for > 0 else ("half-open" if breaker.get("open_until")
                                              else "closed")
        return ThrottleState(self.endpoint, rows, status, round(open_for, 2))

    def before_call(self, body: dict[str, Any]) -> Ticket | Park | TooLarge:
        """Admit a call of ``body``, waiting briefly if needed, or say how long to park."""
        decision = self.breaker.allow(self.endpoint)
        if not decision.allowed:
            return Park(decision.wait + random.uniform(0, 1), "circuit_open")
        model = str(body.get("model", ""))
        budget = self.budget(model)
        estimate = admission_tokens(body)
        if not self.settings.ratelimit_enabled:
            return Ticket(None, self.endpoint, budget, estimate, 0.0)
        key = limit_key(self.endpoint, model)
        deadline = time.monotonic() + self.settings.max_inline_wait_seconds
        waited = 0.0
        while True:
            max_wait = max(0.0, deadline - time.monotonic())
            grant = self.limiter.acquire(key, tokens=estimate, budget=budget, max_wait=max_wait)
            if grant.too_large:
                return TooLarge(estimate, budget.tpm)
            if not grant.reserved:
                # The limiter spaces reserved calls; a little jitter spreads the parked ones.
                return Park(grant.wait * random.uniform(1.0, 1.1), "budget")
            if grant.wait <= 0:
                return Ticket(key, self.endpoint, budget, estimate, waited)
            time.sleep(grant.wait)
            waited += grant.wait
            # A 429 elsewhere in the fleet while this call slept voids the slot: queue again
            # behind the cooldown rather than call into it.
            if self.limiter.epoch(key) == grant.epoch:
                return Ticket(key, self.endpoint, budget, estimate, waited)

    def before_calls(self, bodies: Sequence[dict[str, Any]], *, max_wait: float | None = None
                     ) -> list[Ticket | Park | TooLarge]:
        """Admit a group's calls in one round trip: the breaker once, the limiter per call.

        Unlike :meth:`before_call` nothing sleeps here: a :class:`Ticket` whose slot starts
        later carries its ``waited`` (the delay before its start) and its ``epoch``; the caller
        starts it then, unless :meth:`still_valid` says a 429 voided it meanwhile.
        """
        if not bodies:
            return []
        asks = []
        for body in bodies:
            model = str(body.get("model", ""))
            asks.append((limit_key(self.endpoint, model), admission_tokens(body),
                         self.budget(model)))
        # The breaker's question and the limiter's reservations share one round trip. While
        # the breaker is open the slots reserved are not used: the API is failing then, and
        # budget refills.
        batch = ScriptBatch(self.limiter.redis)
        self.breaker.queue_allow(self.endpoint, batch)
        limited = self.settings.ratelimit_enabled
        if limited:
            self.limiter.acquire_many(asks, batch=batch, max_wait=(
                self.settings.max_inline_wait_seconds if max_wait is None else max_wait))
        answers = batch.execute()
        decision = self.breaker.decision(answers[0])
        if not decision.allowed:
            return [Park(decision.wait + random.uniform(0, 1), "circuit_open") for _ in bodies]
        if not limited:
            grants = [Grant(reserved=True, wait=0.0)] * len(asks)
        else:
            grants = [grant_of(answer) for answer in answers[1:]]
        admitted: list[Ticket | Park | TooLarge] = []
        for i, ((key, estimate, budget), grant) in enumerate(zip(asks, grants, strict=True)):
            if decision.probe and i > 0:
                # Half open: one call probes the API; the others wait for its answer.
                admitted.append(Park(1 + random.uniform(0, 1), "circuit_open"))
            elif not limited:
                admitted.append(Ticket(None, self.endpoint, budget, estimate, 0.0))
            elif grant.too_large:
                admitted.append(TooLarge(estimate, budget.tpm))
            elif not grant.reserved:
                admitted.append(Park(grant.wait * random.uniform(1.0, 1.1), "budget"))
            else:
                admitted.append(Ticket(key, self.endpoint, budget, estimate,
                                       max(0.0, grant.wait), epoch=grant.epoch))
        return admitted

    def still_valid(self, ticket: Ticket) -> bool:
        """Whether a delayed ticket's slot stands: a 429 since it was reserved voids it."""
        return ticket.key is None or ticket.waited <= 0 or \
            self.limiter.epoch(ticket.key) == ticket.epoch

    def settle_calls(self, calls: Sequence[tuple[Ticket, CallResult]]) -> list[float | None]:
        """:meth:`after_call` for several calls, in one round trip."""
        cooldowns: list[float | None] = []
        try:
            batch = ScriptBatch(self.limiter.redis)
            for ticket, call in calls:
                cooldowns.append(self._settle(ticket, call, batch))
            batch.execute()
        except redis.RedisError as exc:
            log.warning("could not settle the calls with the fleet limiter: %s", exc)
        return cooldowns

    def after_call(self, ticket: Ticket, call: CallResult) -> float | None:
        """Correct the reservation with the real usage, and learn from headers and errors.

        Returns how long a 429 asks the fleet to cool down, or None for any other outcome.
        Best effort: the answer is paid for, so losing Redis here must not lose it too.
        """
        cooldown = None
        try:
            # One round trip for the limiter's and the breaker's scripts.
            batch = ScriptBatch(self.limiter.redis)
            cooldown = self._settle(ticket, call, batch)
            batch.execute()
        except redis.RedisError as exc:
            log.warning("could not settle the call with the fleet limiter: %s", exc)
        return cooldown

    def _settle(self, ticket: Ticket, call: CallResult, batch: ScriptBatch) -> float | None:
        cooldown = None
        if isinstance(call.error, RateLimitedError):
            cooldown = cooldown_seconds(call.headers, call.error.retry_after)
        if ticket.key is not None:
            used = call.usage.input_tokens + call.usage.output_tokens
            delta = used - ticket.estimate if used else 0  # no usage: the API keeps it
            self.limiter.settle(ticket.key, budget=ticket.budget, token_delta=delta,
                                headers=call.headers, batch=batch)
            if cooldown is not None:
                self.limiter.cooldown(ticket.key, cooldown, budget=ticket.budget, batch=batch)
        self.breaker.record(self.endpoint, ok=not isinstance(call.error, TransientError),
                            batch=batch)
        return cooldown


_throttles: PerProcess[None, Throttle] = PerProcess()


def get_throttle(settings: Settings) -> Throttle:
    """This process's throttle, on the broker's Redis."""
    return _throttles.get(None, lambda: _make_throttle(settings))


def _make_throttle(settings: Settings) -> Throttle:
    client = redis_client(settings.effective_broker_url)
    return Throttle(
        settings,
        RateLimiter(client, burst_seconds=settings.ratelimit_burst_seconds),
        CircuitBreaker(
            client, window=settings.breaker_window,
            failure_ratio=settings.breaker_failure_ratio, min_calls=settings.breaker_min_calls,
            open_seconds=settings.breaker_open_seconds,
            max_open_seconds=settings.breaker_max_open_seconds,
        ),
    )
