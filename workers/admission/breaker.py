"""A circuit breaker per endpoint, shared by every worker through Redis.

When most of an endpoint's recent calls failed with transient errors (5xx, timeouts, resets),
workers stop calling it. After ``open_seconds`` one worker at a time may send a probe. A
successful probe closes the breaker; a failed one reopens it for twice as long, up to
``max_open_seconds``. Rate limits and client errors do not count: the endpoint is answering.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from workers.admission.scripts import ScriptBatch, load_script

#: May a call go now? {1, 0}: yes; {2, 0}: yes, as the one probe of a tripped endpoint;
#: {0, wait}: not for ``wait`` seconds.
_ALLOW = load_script("breaker_allow")
#: Add a call's outcome to the recent window and return the state it leaves, ``open`` or
#: ``closed``: a failed probe reopens for twice as long, a good one closes.
_RECORD = load_script("breaker_record")


@dataclass(frozen=True)
class BreakerDecision:
    """``allowed``: call now (``probe`` when this call tests a tripped endpoint); else wait."""

    allowed: bool
    wait: float = 0.0
    probe: bool = False


class CircuitBreaker:
    """Fleet-wide breaker state per endpoint."""

    def __init__(self, client: redis.Redis, *, window: int = 20, failure_ratio: float = 0.8,
                 min_calls: int = 10, open_seconds: float = 5.0,
                 max_open_seconds: float = 120.0) -> None:
        self.redis = client
        self.window, self.failure_ratio, self.min_calls = window, failure_ratio, min_calls
        self.open_seconds, self.max_open_seconds = open_seconds, max_open_seconds
        self._allow = client.register_script(_ALLOW)
        self._record = client.register_script(_RECORD)

    @staticmethod
    def key(endpoint: str) -> str:
        return f"docpipe:breaker:{endpoint}"

    def allow(self, endpoint: str, *, now: float | None = None) -> BreakerDecision:
        """May this worker call ``endpoint`` now?"""
        return self.decision(self._allow(keys=[self.key(endpoint)],
                                         args=[self.open_seconds, -1 if now is None else now]))

    def queue_allow(self, endpoint: str, batch: ScriptBatch, *, caller: str = "") -> None:
        """:meth:`allow`, queued on ``batch``; :meth:`decision` reads its answer. A half-open
        probe is taken in ``caller``'s name (see :meth:`RateLimiter.acquire_many`'s gate)."""
        batch.add(self._allow, [self.key(endpoint)], [self.open_seconds, -1, caller])

    @staticmethod
    def decision(answer: Any) -> BreakerDecision:
        """The :class:`BreakerDecision` in the allow script's answer."""
        status, wait = answer
        status = int(status)
        return BreakerDecision(allowed=status > 0, wait=float(wait), probe=status == 2)

    def record(self, endpoint: str, *, ok: bool, now: float | None = None,
               batch: ScriptBatch | None = None) -> str | None:
        """Record one call's outcome; returns the breaker state after it.

        With ``batch`` the script is queued there and None is returned.
        """
        keys = [self.key(endpoint), self.key(endpoint) + ":window"]
        args = [1 if ok else 0, self.window, self.failure_ratio, self.min_calls,
                self.open_seconds, self.max_open_seconds, -1 if now is None else now]
        if batch is not None:
            batch.add(self._record, keys, args)
            return None
        state = self._record(keys=keys, args=args)
        return state.decode() if isinstance(state, bytes) else str(state)

    def state(self, endpoint: str) -> dict[str, float]:
        raw = self.redis.hgetall(self.key(endpoint))
        return {k.decode(): float(v) for k, v in raw.items()}  # type: ignore[union-attr]
