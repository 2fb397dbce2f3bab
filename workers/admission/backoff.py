"""Backoff delays: capped exponential with full jitter, or the server's own wait."""

from __future__ import annotations

import random


def backoff_delay(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Full-jitter delay before retry number ``attempt`` (1 for the first retry).

    Uniform in ``[0, min(cap, base * 2**(attempt-1))]``, so many workers that failed together
    do not retry together.
    """
    if attempt < 1:
        raise ValueError("attempt starts at 1")
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 64))
    return (rng or random).uniform(0.0, ceiling)


def retry_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Delay before the next call: the server's ``retry-after`` if it gave one, else backoff.

    A server wait gets up to 10% jitter on top so a fleet does not return in lockstep; the
    result never exceeds ``cap``.
    """
    if retry_after is not None and retry_after > 0:
        jitter = (rng or random).uniform(0.0, 0.1 * retry_after)
        return min(cap, retry_after + jitter)
    return backoff_delay(attempt, base=base, cap=cap, rng=rng)
