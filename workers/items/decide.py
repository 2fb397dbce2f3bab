"""The decision core: what happens to an item, as a pure function of what is known about it.

Every path that learns something about an item (a live call's answer, a Batch API line, a
request that could not be built, a worker lost again and again, docpipe's own services failing
under a call) describes it as :class:`Known` and asks :func:`decide`. The answer is one of six
decisions; applying it (the database writes, the messages) is the caller's job, so the live
path and the batch path cannot disagree about what an error means.

No I/O here: the counts the decision needs are read by the caller, and the jitter of a backoff
comes from the ``rng`` it passes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from workers.admission.backoff import retry_delay
from workers.errors import (
    BadOutputError,
    CapacityUnavailableError,
    ItemError,
    PauseRunError,
    RateLimitedError,
    RetryableError,
)
from workers.settings import Settings


@dataclass(frozen=True)
class Policy:
    """The settings a decision reads."""

    max_attempts: int
    max_rate_limited_attempts: int
    retry_base_seconds: float
    retry_max_seconds: float

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        """The policy that ``settings`` configure."""
        return cls(max_attempts=settings.max_attempts,
                   max_rate_limited_attempts=settings.max_rate_limited_attempts,
                   retry_base_seconds=settings.retry_base_seconds,
                   retry_max_seconds=settings.retry_max_seconds)


def alone_from(max_worker_losses: int) -> int:
    """The worker losses from which an item is claimed only alone, one at a time in each
    worker (:mod:`workers.process.alone`): its last chance before ``max_worker_losses``
    quarantines it.

    A poison document is then in a group twice at most, and the innocent items lost with it
    run alone only if they were lost with it both times; a single kill (a deploy, an OOM of
    the whole host) leaves its items to run in groups, at full speed.
    """
    return max(1, max_worker_losses - 1)


@dataclass(frozen=True)
class Known:
    """What is known about an item after one thing happened to it.

    Attributes:
        error: What went wrong, or None: the call answered with output the schema accepts.
        attempts: Calls counted against the item's attempts, this one included.
        rate_limited: 429 ``rate_limit_exceeded`` answers for the item, this one included.
        capacity_refused: Flex requests refused for lack of capacity, this one included.
        repairing: This call was the item's one repair (the previous answer was bad output).
        cooldown: Seconds the fleet waits after a 429, as the limiter set it.
        has_parent: The item is a part of a long document, with reduces above it.
        run_id: The item's run, named in a pause's hint.
        pipeline: The run's pipeline, named in a pause's hint.
    """

    error: ItemError | None
    attempts: int = 1
    rate_limited: int = 0
    capacity_refused: int = 0
    repairing: bool = False
    cooldown: float | None = None
    has_parent: bool = False
    run_id: int = 0
    pipeline: str = ""


@dataclass(frozen=True)
class Succeed:
    """Store the result; hand it up the tree."""


@dataclass(frozen=True)
class Repair:
    """Ask again at once, one time: the answer was refused, cut off or off the schema."""

    error: ItemError


@dataclass(frozen=True)
class RetryAfter:
    """Call again after ``seconds``; the attempt counts."""

    seconds: float
    error: ItemError


@dataclass(frozen=True)
class ParkUntil:
    """Wait ``seconds`` without using up an attempt: not the item's fault (a 429, no capacity)."""

    seconds: float
    error: ItemError


@dataclass(frozen=True)
class FailWith:
    """Fail the item with its own code; ``ancestors``: fail the reduces above it too."""

    error_class: str
    code: str
    message: str
    ancestors: bool


@dataclass(frozen=True)
class PauseRun:
    """Every item of the run would meet this: pause the run, give the item back untouched."""

    error: PauseRunError
    reason: str


Decision = Succeed | Repair | RetryAfter | ParkUntil | FailWith | PauseRun


def decide(known: Known, policy: Policy, *, rng: random.Random | None = None) -> Decision:
    """The one decision for every path: live, batch, repair and release."""
    error = known.error
    if error is None:
        return Succeed()
    if isinstance(error, RateLimitedError):
        # The fleet's cooldown is already set; the 429 is not this item's fault, so it costs
        # no attempt, up to a cap that stops a request the API always refuses from looping.
        if known.rate_limited < policy.max_rate_limited_attempts:
            return ParkUntil(known.cooldown or 0.0, error)
        return _fail(known, error,
                     f"still rate limited after {known.rate_limited} attempts: {error.message}")
    if isinstance(error, CapacityUnavailableError):
        # Flex capacity ran out: nothing was charged, so the item waits with backoff and
        # costs no attempt, up to the same cap as a 429.
        if known.capacity_refused < policy.max_rate_limited_attempts:
            return ParkUntil(retry_delay(max(1, known.capacity_refused),
                                         base=policy.retry_base_seconds,
                                         cap=policy.retry_max_seconds,
                                         retry_after=error.retry_after, rng=rng), error)
        return _fail(known, error,
                     f"no flex capacity after {known.capacity_refused} attempts: {error.message}")
    if isinstance(error, BadOutputError):
        if not known.repairing and known.attempts < policy.max_attempts:
            return Repair(error)
        suffix = " (after one repair attempt)" if known.repairing else ""
        return _fail(known, error, f"{error.message}{suffix}")
    if isinstance(error, RetryableError):
        if known.attempts < policy.max_attempts:
            return RetryAfter(retry_delay(max(1, known.attempts), base=policy.retry_base_seconds,
                                          cap=policy.retry_max_seconds,
                                          retry_after=error.retry_after, rng=rng), error)
        return _fail(known, error, f"gave up after {known.attempts} attempts: {error.message}")
    if isinstance(error, PauseRunError):
        reason = f"{error.error_class} ({error.code}): {clip(error.message, 500)}"
        if error.hint:
            stop = "" if reason.endswith((".", "!", "?", "…")) else "."
            hint = error.hint.format(run=known.run_id, pipeline=known.pipeline)
            reason += f"{stop} To continue: {hint}."
        return PauseRun(error, reason)
    return _fail(known, error, error.message)


def pause_reason_class(reason: str | None) -> str | None:
    """The error class a :class:`PauseRun` reason begins with (``quota``, ``pipeline``...),
    or None for a reason no decision wrote (cancelled, interrupted)."""
    head = (reason or "").split(" (", 1)[0]
    return head if head and " (" in (reason or "") and head.isidentifier() else None


def _fail(known: Known, error: ItemError, message: str) -> FailWith:
    return FailWith(error.error_class, error.code, clip(message), ancestors=known.has_parent)


#: Longest error message stored on an item or attempt.
MAX_MESSAGE = 2000


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis where it was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
