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
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.commands.core import Script

from workers.llm.errors import parse_duration
from workers.runtime.process_local import PerProcess

#: Reserve a slot and report when it starts. Returns {status, wait, epoch}:
#: status 1 = reserved (start after wait), 0 = not reserved (wait > max_wait), -1 = too big.
#: ``ts`` is when the levels were last brought up to date; after a cooldown it lies in the
#: future (the cooldown's end), and no budget refills before it.
_ACQUIRE = """
local key, promises = KEYS[1], KEYS[2]
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local nreq, ntok = tonumber(ARGV[3]), tonumber(ARGV[4])
local burst, now, max_wait = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local s = redis.call('HMGET', key, 'r', 't', 'ts', 'cool', 'lrpm', 'ltpm', 'epoch')
if rpm <= 0 then rpm = tonumber(s[5]) or 0 end
if tpm <= 0 then tpm = tonumber(s[6]) or 0 end
local ts = math.max(tonumber(s[3]) or now, now)
local dt = math.max(0, now - (tonumber(s[3]) or now))
local base = ts - now
local r, t = tonumber(s[1]), tonumber(s[2])
local wait = 0
local rcap, tcap = 0, 0
if rpm > 0 then
  rcap = math.max(nreq, rpm * burst / 60)
  if r == nil then r = rcap end
  r = math.min(rcap, r + dt * rpm / 60)
  if r < nreq then wait = math.max(wait, (nreq - r) * 60 / rpm) end
end
if tpm > 0 then
  if ntok > tpm then return {-1, '0', s[7] or '0'} end
  tcap = math.max(ntok, tpm * burst / 60)
  if t == nil then t = tcap end
  t = math.min(tcap, t + dt * tpm / 60)
  if t < ntok then wait = math.max(wait, (ntok - t) * 60 / tpm) end
end
wait = wait + base
local cool = tonumber(s[4]) or 0
if cool > now then wait = math.max(wait, cool - now) end
local status = 0
if wait <= max_wait then
  status = 1
  -- A budget that is not the one that sets the slot may fill up before the slot; the API's
  -- bucket loses what it cannot hold until then, so ours loses it too.
  local ahead = wait - base
  if rpm > 0 then r = r - nreq - math.max(0, r + ahead * rpm / 60 - rcap) end
  if tpm > 0 then t = t - ntok - math.max(0, t + ahead * tpm / 60 - tcap) end
end
local fields = {'ts', tostring(ts)}
if r ~= nil then table.insert(fields, 'r'); table.insert(fields, tostring(r)) end
if t ~= nil then table.insert(fields, 't'); table.insert(fields, tostring(t)) end
redis.call('HSET', key, unpack(fields))
redis.call('EXPIRE', key, 86400)
redis.call('ZREMRANGEBYSCORE', promises, '-inf', now)
if status == 1 and wait > 0 then
  local seq = redis.call('HINCRBY', key, 'seq', 1)
  local req = 0
  local tok = 0
  if rpm > 0 then req = nreq end
  if tpm > 0 then tok = ntok end
  redis.call('ZADD', promises, now + wait, seq .. ':' .. req .. ':' .. tok)
  redis.call('EXPIRE', promises, 86400)
end
return {status, tostring(wait), s[7] or '0'}
"""

#: True a charge up to the real usage, learn limits from headers, follow remaining-*.
#: An upward true-up voids the promised slots that have not started and forgives their charge.
_SETTLE = """
local key, promises = KEYS[1], KEYS[2]
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local dtok = tonumber(ARGV[3])
local rem_r, rem_t = tonumber(ARGV[4]), tonumber(ARGV[5])
local lim_r, lim_t = tonumber(ARGV[6]), tonumber(ARGV[7])
local burst, now = tonumber(ARGV[8]), tonumber(ARGV[9])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
if rpm <= 0 and lim_r > 0 then redis.call('HSET', key, 'lrpm', lim_r); rpm = lim_r end
if tpm <= 0 and lim_t > 0 then redis.call('HSET', key, 'ltpm', lim_t); tpm = lim_t end
if rpm <= 0 then rpm = tonumber(redis.call('HGET', key, 'lrpm')) or 0 end
if tpm <= 0 then tpm = tonumber(redis.call('HGET', key, 'ltpm')) or 0 end
local s = redis.call('HMGET', key, 'r', 't', 'ts')
local ts = math.max(tonumber(s[3]) or now, now)
local dt = math.max(0, now - (tonumber(s[3]) or now))
local r, t = tonumber(s[1]), tonumber(s[2])
local fields = {'ts', tostring(ts)}
local freq, ftok = 0, 0
if dtok > 0 then
  redis.call('ZREMRANGEBYSCORE', promises, '-inf', now)
  local pending = redis.call('ZRANGE', promises, 0, -1)
  for _, member in ipairs(pending) do
    local _, req, tok = string.match(member, '^(%d+):([%d.]+):([%d.]+)$')
    freq = freq + tonumber(req)
    ftok = ftok + tonumber(tok)
  end
  if #pending > 0 then
    redis.call('DEL', promises)
    redis.call('HINCRBY', key, 'epoch', 1)
  end
end
-- Refill like acquire, but never clamp a level below where it stands (a large request may
-- have raised it past the burst).
if rpm > 0 then
  local cap = math.max(1, rpm * burst / 60)
  r = r or cap
  r = math.min(math.max(cap, r), r + dt * rpm / 60) + freq
  if rem_r >= 0 and rem_r < r then r = rem_r end
  table.insert(fields, 'r'); table.insert(fields, tostring(r))
end
if tpm > 0 then
  local cap = tpm * burst / 60
  t = t or cap
  t = math.min(math.max(cap, t), t + dt * tpm / 60) + ftok - dtok
  if rem_t >= 0 and rem_t < t then t = rem_t end
  table.insert(fields, 't'); table.insert(fields, tostring(t))
end
redis.call('HSET', key, unpack(fields))
redis.call('EXPIRE', key, 86400)
return 1
"""

#: After a 429: nobody calls this (endpoint, model) before ``now + seconds``. The levels are
#: (nearly) empty at the cooldown's end and refill only from then. Reservations made before
#: it are void (the epoch changes, and their debt is forgiven): their holders must reserve
#: again, so they queue behind the cooldown at the budget's pace instead of all calling when
#: it ends.
_COOLDOWN = """
local key, promises = KEYS[1], KEYS[2]
local seconds, now = tonumber(ARGV[1]), tonumber(ARGV[2])
local rpm, tpm, burst = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local s = redis.call('HMGET', key, 'r', 't', 'ts', 'cool', 'lrpm', 'ltpm')
if rpm <= 0 then rpm = tonumber(s[5]) or 0 end
if tpm <= 0 then tpm = tonumber(s[6]) or 0 end
local ts = math.max(tonumber(s[3]) or now, now)
local dt = math.max(0, now - (tonumber(s[3]) or now))
local cool = math.max(tonumber(s[4]) or 0, now + seconds)
local span = cool - ts
-- The voided promises' charges are forgiven; what the fleet really spent is not.
redis.call('ZREMRANGEBYSCORE', promises, '-inf', now)
local freq, ftok = 0, 0
for _, member in ipairs(redis.call('ZRANGE', promises, 0, -1)) do
  local _, req, tok = string.match(member, '^(%d+):([%d.]+):([%d.]+)$')
  freq = freq + tonumber(req)
  ftok = ftok + tonumber(tok)
end
local fields = {'cool', tostring(cool), 'ts', tostring(math.max(cool, ts))}
-- A 429 says the API's bucket is about empty now. By the cooldown's end it holds what refilled
-- meanwhile (one request at most is let go then), or less if true-ups left it in debt.
local r, t = tonumber(s[1]), tonumber(s[2])
if r then
  local rate = rpm / 60
  r = math.min(math.max(1, rpm * burst / 60), r + dt * rate) + freq
  r = math.min(math.min(1, (cool - now) * rate), r + span * rate)
  table.insert(fields, 'r'); table.insert(fields, tostring(r))
end
if t then
  local rate = tpm / 60
  t = math.min(math.max(t, tpm * burst / 60), t + dt * rate) + ftok
  t = math.min(0, t + span * rate)
  table.insert(fields, 't'); table.insert(fields, tostring(t))
end
redis.call('HSET', key, unpack(fields))
redis.call('HINCRBY', key, 'epoch', 1)
redis.call('DEL', promises)
redis.call('EXPIRE', key, 86400)
return 1
"""


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
    #: The key's cooldown count when the slot was reserved: if it has changed by the time the
    #: slot starts, a 429 voided the reservation.
    epoch: int = 0


_PREFIX = "docpipe:ratelimit:"


def limit_key(endpoint: str, model: str) -> str:
    """Redis key of the budget for one (endpoint, model)."""
    return f"{_PREFIX}{endpoint}:{model}"


def promises_key(key: str) -> str:
    """The sorted set of slots promised under ``key`` that have not started yet."""
    # Outside the budget keys' prefix, so a scan of those finds only hashes.
    return f"docpipe:ratelimit-promises:{key.removeprefix(_PREFIX)}"


class ScriptBatch:
    """Lua scripts queued together and run in one round trip.

    redis-py's ``Script`` on a pipeline first asks ``SCRIPT EXISTS``: a second round trip, the
    one a batch is for. Here each script goes as a bare ``EVALSHA``; one that Redis no longer
    knows (a restart empties its script cache) is loaded and run again on its own, so no
    script runs twice.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._calls: list[tuple[Script, list[Any], list[Any]]] = []

    def add(self, script: Script, keys: list[Any], args: list[Any]) -> None:
        """Queue ``script`` to run with ``keys`` and ``args``."""
        self._calls.append((script, keys, args))

    def execute(self) -> list[Any]:
        """Run every queued script; return their results in order. Raises the first error."""
        if not self._calls:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for script, keys, args in self._calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            results: list[Any] = pipe.execute(raise_on_error=False)
        for i, (script, keys, args) in enumerate(self._calls):
            if isinstance(results[i], redis.exceptions.NoScriptError):
                results[i] = script(keys=keys, args=args)  # loads it, then runs it
        self._calls.clear()
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results


class RateLimiter:
    """The fleet-wide limiter. Thread-safe; one per process is enough."""

    def __init__(self, client: redis.Redis, *, burst_seconds: float = 1.0) -> None:
        self.redis = client
        self.burst_seconds = burst_seconds
        self._acquire = client.register_script(_ACQUIRE)
        self._settle = client.register_script(_SETTLE)
        self._cooldown = client.register_script(_COOLDOWN)

    def acquire(self, key: str, *, tokens: int, budget: Budget, max_wait: float,
                requests: int = 1, now: float | None = None) -> Grant:
        """Reserve ``requests`` and ``tokens`` if the slot starts within ``max_wait`` seconds."""
        return grant_of(self._acquire(
            keys=[key, promises_key(key)],
            args=[budget.rpm or 0, budget.tpm or 0, requests, tokens, self.burst_seconds,
                  -1 if now is None else now, max_wait],
        ))

    def acquire_many(self, asks: Sequence[tuple[str, int, Budget]], *, max_wait: float,
                     now: float | None = None, batch: ScriptBatch | None = None
                     ) -> list[Grant]:
        """Reserve one request each for several calls, ``(key, tokens, budget)``, in one round
        trip. Each reservation is the same atomic script as :meth:`acquire`, run in order, so a
        group is admitted exactly as its calls would be one after another.

        With ``batch`` the scripts are queued there and ``[]`` is returned: the caller reads
        each answer with :func:`grant_of`.
        """
        own = batch is None
        batch = ScriptBatch(self.redis) if batch is None else batch
        for key, tokens, budget in asks:
            batch.add(self._acquire, [key, promises_key(key)],
                      [budget.rpm or 0, budget.tpm or 0, 1, tokens, self.burst_seconds,
                       -1 if now is None else now, max_wait])
        return [grant_of(answer) for answer in batch.execute()] if own else []

    def settle(self, key: str, *, budget: Budget, token_delta: int = 0,
               headers: Mapping[str, str] | None = None, now: float | None = None,
               batch: ScriptBatch | None = None) -> None:
        """Correct a reservation by ``token_delta`` (real minus estimate) and follow headers.

        With ``batch`` the script is queued there, to run when the batch executes.
        """
        h = headers or {}
        limits = {kind: _int_header(h, f"x-ratelimit-limit-{kind}")
                  for kind in ("requests", "tokens")}
        # A remaining-* count is believed only beside a plausible limit-* count.
        remaining = {kind: _int_header(h, f"x-ratelimit-remaining-{kind}", allow_zero=True)
                     if limits[kind] > 0 else -1 for kind in limits}
        _run(self._settle, batch, keys=[key, promises_key(key)],
             args=[budget.rpm or 0, budget.tpm or 0, token_delta, remaining["requests"],
                   remaining["tokens"], limits["requests"], limits["tokens"],
                   self.burst_seconds, -1 if now is None else now])

    def cooldown(self, key: str, seconds: float, *, budget: Budget | None = None,
                 now: float | None = None, batch: ScriptBatch | None = None) -> None:
        """Hold every worker back from this (endpoint, model) for ``seconds`` (see settle)."""
        rpm = budget.rpm if budget is not None and budget.rpm else 0
        tpm = budget.tpm if budget is not None and budget.tpm else 0
        _run(self._cooldown, batch, keys=[key, promises_key(key)],
             args=[max(0.0, seconds), -1 if now is None else now, rpm, tpm,
                   self.burst_seconds])

    def epoch(self, key: str) -> int:
        """How many cooldowns ``key`` has had: a change voids earlier reservations."""
        return int(self.redis.hget(key, "epoch") or 0)

    def state(self, key: str) -> dict[str, float]:
        """The stored state of one key: levels, learned limits, cooldown end (epoch seconds)."""
        raw = self.redis.hgetall(key)
        return {k.decode(): float(v) for k, v in raw.items()}  # type: ignore[union-attr]

    def keys(self) -> list[str]:
        """Every (endpoint, model) key the fleet has used recently."""
        return sorted(k.decode() for k in self.redis.scan_iter(f"{_PREFIX}*"))


def grant_of(answer: Any) -> Grant:
    """The :class:`Grant` in an acquire script's answer."""
    status, wait, epoch = answer
    if int(status) == -1:
        return Grant(reserved=False, wait=math.inf, too_large=True)
    return Grant(reserved=int(status) == 1, wait=float(wait), epoch=int(epoch))


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


def _run(script: Script, batch: ScriptBatch | None, *, keys: list[Any], args: list[Any]
         ) -> Any:
    """Run ``script`` now, or queue it on ``batch``."""
    if batch is None:
        return script(keys=keys, args=args)
    batch.add(script, keys, args)
    return None


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


_clients: PerProcess[str, redis.Redis] = PerProcess()


def redis_client(url: str) -> redis.Redis:
    """A Redis client for ``url`` owned by this process."""
    return _clients.get(url, lambda: redis.Redis.from_url(
        url, health_check_interval=30, socket_timeout=10, socket_connect_timeout=5))
