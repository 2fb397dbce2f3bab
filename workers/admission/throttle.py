"""Admission to the model API: the circuit breaker, then the fleet-wide rate limit.

:meth:`Throttle.before_calls` admits a group's calls in one round trip, each with the delay
(at most ``max_inline_wait_seconds``) before its slot starts, which the engine waits out
without a thread, or tells the caller to park the item for longer. Parking does not hold a
slot. :meth:`Throttle.settle_calls` feeds what the API said back into the limiter and the
breaker.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
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
from workers.process.local import PerProcess
from workers.settings import Settings

log = logging.getLogger("docpipe.throttle")


@dataclass(frozen=True)
class Ticket:
    """An admitted call: what it reserved, and how long it waited for that."""

    key: str | None
    endpoint: str
    budget: Budget
    estimate: int
    #: Seconds still to wait before the slot starts (:meth:`Throttle.before_calls`); the
    #: time waited in all, once the call is sent.
    waited: float
    #: The limiter's epoch when the slot was reserved (see :meth:`Throttle.still_valid`).
    epoch: int = 0
    #: No slot yet: the budget is being learned from another call's answer. Ask again after
    #: ``waited`` seconds.
    learning: bool = False
    #: This call probes the API for its budget: :meth:`Throttle.unused` if it is not sent.
    probe: str | None = None


@dataclass(frozen=True)
class Park:
    """Not now: come back in ``seconds``. ``reason`` is ``budget``, ``circuit_open`` or
    ``run_paused``."""

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
    #: ``settings`` when configured; ``headers`` when learned from ``x-ratelimit-limit-*``;
    #: ``none`` when the API's answers name no limit; ``unknown`` until a probe's answer
    #: comes back (or once what was learned is older than ``learned_limits_ttl_seconds``).
    source: str
    #: Budget free now; None where there is no budget, or no level is known yet.
    requests_available: float | None
    tokens_available: float | None
    cooldown_seconds: float
    #: When the budget was last learned (ISO 8601, UTC) and the request id of that answer.
    learned_at: str | None = None
    learned_from: str | None = None
    #: Seconds until what was learned is probed for again, if nothing renews it.
    expires_in_seconds: float | None = None


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
        rows = [self._limit_state(key, now) for key in self.limiter.keys()]
        breaker = self.breaker.state(self.endpoint)
        open_for = max(0.0, breaker.get("open_until", 0.0) - now)
        status = "open" if open_for > 0 else ("half-open" if breaker.get("open_until")
                                              else "closed")
        return ThrottleState(self.endpoint, rows, status, round(open_for, 2))

    def _limit_state(self, key: str, now: float) -> LimitState:
        state = self.limiter.state(key)
        configured = self.budget(key.rsplit(":", 1)[-1])
        learned = self.limiter.learned(key, now=now)
        rpm, tpm = configured.rpm, configured.tpm
        if configured.rpm or configured.tpm:
            source = "settings"
        elif learned is None:
            source = "unknown"
        else:
            source, rpm, tpm = learned.source, learned.rpm, learned.tpm
        if learned is not None and (configured.rpm is None or configured.tpm is None):
            rpm, tpm = rpm or learned.rpm, tpm or learned.tpm
        return LimitState(
            key=key, rpm=rpm, tpm=tpm, source=source,
            # No level stored yet is unknown, not an empty bucket.
            requests_available=round(state["r"], 2) if rpm and "r" in state else None,
            tokens_available=round(state["t"]) if tpm and "t" in state else None,
            cooldown_seconds=round(max(0.0, state.get("cool", 0.0) - now), 2),
            learned_at=None if learned is None else
            datetime.fromtimestamp(learned.at, UTC).isoformat(timespec="seconds"),
            learned_from=None if learned is None else learned.request_id,
            expires_in_seconds=None if learned is None else
            round(learned.at + self.limiter.learned_ttl - now, 1),
        )

    def before_calls(self, bodies: Sequence[dict[str, Any]], *, max_wait: float | None = None,
                     learning_wait: float | None = None) -> list[Ticket | Park | TooLarge]:
        """Admit a group's calls in one round trip: the breaker once, the limiter per call.

        Nothing sleeps here: a :class:`Ticket` whose slot starts later carries its ``waited``
        (the delay before its start, at most ``max_wait``) and its ``epoch``; the caller
        starts it then, unless :meth:`still_valid` says a 429 voided it meanwhile. A ticket
        that is ``learning`` reserved nothing (the budget is being learned from a probe
        call): :meth:`still_valid` is False for it, and the caller asks again after its
        delay, for as long as ``learning_wait`` (default ``max_wait``) allows.
        """
        if not bodies:
            return []
        max_wait = self.settings.max_inline_wait_seconds if max_wait is None else max_wait
        learning_wait = max_wait if learning_wait is None else learning_wait
        asks = []
        for body in bodies:
            model = str(body.get("model", ""))
            asks.append((limit_key(self.endpoint, model), admission_tokens(body),
                         self.budget(model)))
        # The breaker's question and the limiter's reservations share one round trip. While
        # the breaker is open the limiter reserves nothing (its gate), but for the half-open
        # probe this group may hold: the calls park, and reserved slots would go unused.
        batch = ScriptBatch(self.limiter.redis)
        caller = secrets.token_hex(8)
        self.breaker.queue_allow(self.endpoint, batch, caller=caller)
        limited = self.settings.ratelimit_enabled
        if limited:
            self.limiter.acquire_many(asks, batch=batch, max_wait=max_wait,
                                      gate=(self.breaker.key(self.endpoint), caller))
        answers = batch.execute()
        decision = self.breaker.decision(answers[0])
        grants = [grant_of(answer) for answer in answers[1:]] if limited else \
            [Grant(reserved=True, wait=0.0)] * len(asks)
        admitted: list[Ticket | Park | TooLarge] = []
        for i, (ask, grant) in enumerate(zip(asks, grants, strict=True)):
            if not decision.allowed:
                admitted.append(Park(decision.wait + random.uniform(0, 1), "circuit_open"))
            elif decision.probe and i > 0:
                # Half open: one call probes the API; the others wait for its answer.
                admitted.append(Park(1 + random.uniform(0, 1), "circuit_open"))
            else:
                admitted.append(self._admission(ask, grant, limited=limited,
                                                learning_wait=learning_wait))
        # A budget probe the breaker stopped would keep the fleet waiting for nothing.
        self._give_back([(key, grant.probe) for (key, _, _), grant, admission
                         in zip(asks, grants, admitted, strict=True)
                         if not isinstance(admission, Ticket)])
        return admitted

    def unused(self, tickets: Sequence[Ticket]) -> None:
        """Tickets whose calls will not be sent (the run's budget had no room, or the item
        was taken over): a budget probe among them is given back, so another call learns
        the budget instead."""
        self._give_back([(ticket.key, ticket.probe) for ticket in tickets])

    def _give_back(self, probes: Sequence[tuple[str | None, str | None]]) -> None:
        for key, probe in probes:
            if key is not None and probe is not None:
                try:
                    self.limiter.release_probe(key, probe)
                except redis.RedisError as exc:  # its hold runs out instead
                    log.warning("could not give back a rate-limit probe: %s", exc)

    def _admission(self, ask: tuple[str, int, Budget], grant: Grant, *, limited: bool,
                   learning_wait: float) -> Ticket | Park | TooLarge:
        """What one limiter grant means for its call: the one rule for every path."""
        key, estimate, budget = ask
        if not limited:
            return Ticket(None, self.endpoint, budget, estimate, 0.0)
        if grant.too_large:
            return TooLarge(estimate, budget.tpm)
        if grant.learning and grant.wait <= learning_wait:
            return Ticket(key, self.endpoint, budget, estimate, grant.wait, epoch=grant.epoch,
                          learning=True)
        if not grant.reserved:
            # The limiter spaces reserved calls; a little jitter spreads the parked ones.
            return Park(grant.wait * random.uniform(1.0, 1.1), "budget")
        return Ticket(key, self.endpoint, budget, estimate, max(0.0, grant.wait),
                      epoch=grant.epoch, probe=grant.probe)

    def still_valid(self, ticket: Ticket) -> bool:
        """Whether a delayed ticket's slot stands: a 429 since it was reserved voids it, and a
        ticket that waited for a budget to be learned never had one."""
        if ticket.learning:
            return False
        return ticket.key is None or ticket.waited <= 0 or \
            self.limiter.epoch(ticket.key) == ticket.epoch

    def settle_calls(self, calls: Sequence[tuple[Ticket, CallResult]]) -> list[float | None]:
        """Correct each call's reservation with its real usage, and learn from headers and
        errors, in one round trip. Returns, per call, how long a 429 asks the fleet to cool
        down (None for any other outcome). Best effort: the answers are paid for, so losing
        Redis here must not lose them too."""
        cooldowns: list[float | None] = []
        try:
            batch = ScriptBatch(self.limiter.redis)
            for ticket, call in calls:
                cooldowns.append(self._settle(ticket, call, batch))
            batch.execute()
        except redis.RedisError as exc:
            log.warning("could not settle the calls with the fleet limiter: %s", exc)
        return cooldowns

    def _settle(self, ticket: Ticket, call: CallResult, batch: ScriptBatch) -> float | None:
        cooldown = None
        if isinstance(call.error, RateLimitedError):
            cooldown = cooldown_seconds(call.headers, call.error.retry_after)
        if ticket.key is not None:
            used = call.usage.input_tokens + call.usage.output_tokens
            delta = used - ticket.estimate if used else 0  # no usage: the API keeps it
            answered = call.http_status is not None and 200 <= call.http_status < 300
            self.limiter.settle(ticket.key, budget=ticket.budget, token_delta=delta,
                                headers=call.headers, answered=answered,
                                request_id=call.request_id, batch=batch)
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
        RateLimiter(client, burst_seconds=settings.ratelimit_burst_seconds,
                    learned_ttl=settings.learned_limits_ttl_seconds,
                    # A probe whose answer never comes (its process died) holds the others
                    # back until its call would have timed out, or its process would have
                    # been found dead: then another call probes.
                    probe_hold=min(settings.request_timeout_seconds,
                                   settings.holder_timeout_seconds)),
        CircuitBreaker(
            client, window=settings.breaker_window,
            failure_ratio=settings.breaker_failure_ratio, min_calls=settings.breaker_min_calls,
            open_seconds=settings.breaker_open_seconds,
            max_open_seconds=settings.breaker_max_open_seconds,
        ),
    )
