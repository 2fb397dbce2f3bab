"""One rate limit for the whole fleet: RPM and TPM budgets in Redis, per (endpoint, model).

Every worker on every machine shares one Redis hash per (endpoint, model), changed only by
atomic Lua scripts. The limiter uses virtual scheduling: a call reserves its estimated cost
now and learns when its slot starts. The level may go below zero, and that debt is the queue
of calls already promised. Calls are therefore spaced evenly and served first come, first
served, with no herd when budget frees up.

Capacity is about ``burst_seconds`` of budget, never a whole minute, so a run starts smoothly.
That capacity is at most the API's own (a full minute) and refills at the same rate, so the
API's bucket is never below ours. Every call made at its slot therefore fits the API's limit.
Corrections keep the two in step:

- :meth:`RateLimiter.settle` trues a charge up or down to the real usage. It also lowers our
  level when the ``x-ratelimit-remaining-*`` headers say that less is left.
- A call that used more than its estimate spends budget already promised to calls waiting for
  their slots, and one of them could then meet a full API. So an upward true-up voids every
  promised slot that has not started (a sorted set beside the hash records them), forgives
  their charges, and bumps the epoch: their holders reserve again, behind the overrun.
- :meth:`RateLimiter.cooldown` holds the whole fleet back after a 429.

A budget nobody configured is learned from the API's ``x-ratelimit-limit-*`` headers. Until
it is known, one call in the whole fleet probes the API and every other call waits for its
answer, so an unknown budget is never exceeded by more than that call. An answer's headers
renew what was learned; a success without them says there is no limit. What was learned is
trusted for ``learned_ttl`` seconds without being seen again, then probed for anew.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from workers.admission.scripts import ScriptBatch, load_script, run_script
from workers.llm.errors import parse_duration

#: Reserve a slot and report when it starts. Returns {status, wait, epoch, probe}:
#: status 1 = reserved (start after wait), 0 = not reserved (wait > max_wait), -1 = too big,
#: 2 = not reserved: the budget is being learned, ask again after wait. ``probe`` is set
#: when this call is the one that learns it.
#: ``ts`` is when the levels were last brought up to date; after a cooldown it lies in the
#: future (the cooldown's end), and no budget refills before it.
_ACQUIRE = load_script("acquire")

#: True a charge up to the real usage, learn limits from headers, follow remaining-*.
#: An upward true-up, or a learned limit that shrank, voids the promised slots that have not
#: started and forgives their charge.
_SETTLE = load_script("settle")

#: After a 429: nobody calls this (endpoint, model) before ``now + seconds``. The levels are
#: (nearly) empty at the cooldown's end and refill only from then. Reservations made before
#: it are void (the epoch changes, and their debt is forgiven): their holders must reserve
#: again, so they queue behind the cooldown at the budget's pace instead of all calling when
#: it ends.
_COOLDOWN = load_script("cooldown")

#: A probe whose call was not sent: the next call probes instead.
_RELEASE_PROBE = load_script("release_probe")


@dataclass(frozen=True)
class Budget:
    """Requests and tokens per minute for one (endpoint, model); None where unknown."""

    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True)
class Grant:
    """The limiter's answer.

    ``reserved`` is True when a slot was reserved and the call may start after ``wait``
    seconds. When it is False, nothing was charged, and the caller should come back after
    ``wait`` seconds. ``too_large`` means the request alone is above the TPM limit.
    """

    reserved: bool
    wait: float
    too_large: bool = False
    #: Nothing reserved because the budget is not known yet: one call probes the API, and
    #: this one asks again after ``wait`` seconds.
    learning: bool = False
    #: Set when this call probes the API for the budget: give it back with
    #: :meth:`RateLimiter.release_probe` if the call is not sent after all.
    probe: str | None = None
    #: The key's cooldown count when the slot was reserved: if it has changed by the time the
    #: slot starts, a 429 voided the reservation.
    epoch: int = 0


@dataclass(frozen=True)
class Learned:
    """A budget learned from the API: limits (None: none), when, and from which answer."""

    rpm: int | None
    tpm: int | None
    #: When the last answer that said so arrived (epoch seconds).
    at: float
    #: ``headers`` (``x-ratelimit-limit-*``) or ``none`` (a success that named no limit).
    source: str
    request_id: str | None


_PREFIX = "docpipe:ratelimit:"
#: Fields of a budget's hash that hold text, not numbers.
_TEXT_FIELDS = {b"lsrc", b"lreq"}


def limit_key(endpoint: str, model: str) -> str:
    """Redis key of the budget for one (endpoint, model)."""
    return f"{_PREFIX}{endpoint}:{model}"


def promises_key(key: str) -> str:
    """The sorted set of slots promised under ``key`` that have not started yet."""
    # Outside the budget keys' prefix, so a scan of those finds only hashes.
    return f"docpipe:ratelimit-promises:{key.removeprefix(_PREFIX)}"


class RateLimiter:
    """The fleet-wide limiter. Thread-safe; one per process is enough."""

    def __init__(self, client: redis.Redis, *, burst_seconds: float = 1.0,
                 learned_ttl: float = 600.0, probe_hold: float = 120.0) -> None:
        self.redis = client
        self.burst_seconds = burst_seconds
        #: How long a budget learned from headers stands without an answer that renews it.
        self.learned_ttl = learned_ttl
        #: How long a probe keeps the others waiting if its answer never comes back (its
        #: process died, or the call is slow): then another call probes too.
        self.probe_hold = probe_hold
        self._acquire = client.register_script(_ACQUIRE)
        self._settle = client.register_script(_SETTLE)
        self._cooldown = client.register_script(_COOLDOWN)
        self._release_probe = client.register_script(_RELEASE_PROBE)

    def acquire(self, key: str, *, tokens: int, budget: Budget, max_wait: float,
                requests: int = 1, now: float | None = None) -> Grant:
        """Reserve ``requests`` and ``tokens`` if the slot starts within ``max_wait`` seconds."""
        return grant_of(self._acquire(keys=[key, promises_key(key)], args=self._acquire_args(
            budget, requests=requests, tokens=tokens, now=now, max_wait=max_wait)))

    def acquire_many(self, asks: Sequence[tuple[str, int, Budget]], *, max_wait: float,
                     now: float | None = None, batch: ScriptBatch | None = None,
                     gate: tuple[str, str] | None = None) -> list[Grant]:
        """Reserve one request each for several calls, ``(key, tokens, budget)``, in one round
        trip. Each reservation is the same atomic script as :meth:`acquire`, run in order, so a
        group is admitted exactly as its calls would be one after another.

        With ``batch`` the scripts are queued there and ``[]`` is returned: the caller reads
        each answer with :func:`grant_of`. With ``gate``, ``(breaker key, caller)``, nothing
        is reserved while that breaker is open, except the first call's slot if ``caller``
        holds the breaker's half-open probe (its allow script ran first in ``batch``).
        """
        own = batch is None
        batch = ScriptBatch(self.redis) if batch is None else batch
        for i, (key, tokens, budget) in enumerate(asks):
            keys = [key, promises_key(key)]
            args = self._acquire_args(budget, requests=1, tokens=tokens, now=now,
                                      max_wait=max_wait)
            if gate is not None:
                keys.append(gate[0])
                args.append(gate[1] if i == 0 else "")
            batch.add(self._acquire, keys, args)
        return [grant_of(answer) for answer in batch.execute()] if own else []

    def _acquire_args(self, budget: Budget, *, requests: int, tokens: int, now: float | None,
                      max_wait: float) -> list[float | str]:
        return [budget.rpm or 0, budget.tpm or 0, requests, tokens, self.burst_seconds,
                -1 if now is None else now, max_wait, self.learned_ttl, self.probe_hold]

    def settle(self, key: str, *, budget: Budget, token_delta: int = 0,
               headers: Mapping[str, str] | None = None, answered: bool = False,
               request_id: str | None = None, now: float | None = None,
               batch: ScriptBatch | None = None) -> None:
        """Correct a reservation by ``token_delta`` (real minus estimate) and follow headers.

        ``answered`` says the API answered the call (a 2xx): its headers then name every
        limit there is. ``request_id`` is kept as where a learned budget came from. With
        ``batch`` the script is queued there, to run when the batch executes.
        """
        h = headers or {}
        limits = {kind: _int_header(h, f"x-ratelimit-limit-{kind}")
                  for kind in ("requests", "tokens")}
        # A remaining-* count is believed only beside a plausible limit-* count.
        remaining = {kind: _int_header(h, f"x-ratelimit-remaining-{kind}", allow_zero=True)
                     if limits[kind] > 0 else -1 for kind in limits}
        run_script(self._settle, batch, keys=[key, promises_key(key)],
             args=[budget.rpm or 0, budget.tpm or 0, token_delta, remaining["requests"],
                   remaining["tokens"], limits["requests"], limits["tokens"],
                   self.burst_seconds, -1 if now is None else now, int(answered),
                   request_id or ""])

    def cooldown(self, key: str, seconds: float, *, budget: Budget | None = None,
                 now: float | None = None, batch: ScriptBatch | None = None) -> None:
        """Hold every worker back from this (endpoint, model) for ``seconds`` (see settle)."""
        rpm = budget.rpm if budget is not None and budget.rpm else 0
        tpm = budget.tpm if budget is not None and budget.tpm else 0
        run_script(self._cooldown, batch, keys=[key, promises_key(key)],
             args=[max(0.0, seconds), -1 if now is None else now, rpm, tpm,
                   self.burst_seconds])

    def release_probe(self, key: str, probe: str) -> None:
        """Give back a probe (:attr:`Grant.probe`) whose call was not sent, so that the fleet
        does not wait for its answer until the probe's hold runs out."""
        self._release_probe(keys=[key], args=[probe])

    def epoch(self, key: str) -> int:
        """How many cooldowns ``key`` has had: a change voids earlier reservations."""
        return int(self.redis.hget(key, "epoch") or 0)

    def state(self, key: str) -> dict[str, float]:
        """The stored numbers of one key: levels, learned limits and when (``lat``), cooldown
        end and probe deadline (epoch seconds)."""
        raw = self.redis.hgetall(key)
        return {k.decode(): float(v) for k, v in raw.items()  # type: ignore[union-attr]
                if k not in _TEXT_FIELDS}

    def learned(self, key: str, *, now: float | None = None) -> Learned | None:
        """What the fleet learned of ``key``'s budget from the API, if it still stands."""
        lat, lrpm, ltpm, source, request_id = (
            v.decode() if isinstance(v, bytes) else v
            for v in self.redis.hmget(key, "lat", "lrpm", "ltpm", "lsrc", "lreq"))
        if lat is None:
            return None
        at = float(lat)
        age = (time.time() if now is None else now) - at
        if age > self.learned_ttl:
            return None
        return Learned(rpm=int(float(lrpm or 0)) or None, tpm=int(float(ltpm or 0)) or None,
                       at=at, source=source or "headers", request_id=request_id or None)

    def keys(self) -> list[str]:
        """Every (endpoint, model) key the fleet has used recently."""
        return sorted(k.decode() for k in self.redis.scan_iter(f"{_PREFIX}*"))


def grant_of(answer: Any) -> Grant:
    """The :class:`Grant` in an acquire script's answer (status 3, the breaker's gate shut:
    nothing reserved, and the breaker's own answer says when to come back)."""
    status, wait, epoch, *rest = answer
    if int(status) == -1:
        return Grant(reserved=False, wait=math.inf, too_large=True)
    probe = rest[0] if rest else None
    probe = probe.decode() if isinstance(probe, bytes) else probe
    return Grant(reserved=int(status) == 1, wait=float(wait), epoch=int(epoch),
                 learning=int(status) == 2, probe=probe or None)


def _int_header(headers: Mapping[str, str], name: str, *, allow_zero: bool = False) -> int:
    """An integer header, or -1 where it is missing or bogus (Azure has sent -1 and 0)."""
    value = headers.get(name)
    if value is None:
        return -1
    try:
        number = int(float(value))
    except ValueError:
        return -1
    return number if number > 0 or (allow_zero and number == 0) else -1


def cooldown_seconds(headers: Mapping[str, str], retry_after: float | None) -> float:
    """How long a 429 should hold the fleet back.

    ``retry-after-ms`` or ``retry-after`` if the API sent one. Otherwise the time until the
    exhausted bucket has room again, from ``x-ratelimit-reset-*``; 1 second failing all else.
    """
    if retry_after is not None and retry_after > 0:
        return retry_after
    resets = [parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
              for kind in ("requests", "tokens")]
    known = [r for r in resets if r is not None]
    return min(max(known), 60.0) if known else 1.0
