"""Token buckets that behave like the API's per-minute limits, and their headers."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field


@dataclass
class Bucket:
    """A per-minute limit of ``capacity`` units, refilled continuously over a minute.

    The bucket holds ``window`` seconds of it: a full minute by default. OpenAI says a limit
    may be enforced over shorter periods (60,000 requests a minute as 1,000 a second), and
    a shorter window plays that.
    """

    capacity: float
    window: float = 60.0
    level: float = field(init=False)
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.level = self.holds

    @property
    def holds(self) -> float:
        """The most the bucket holds at once."""
        return max(1.0, self.capacity * self.window / 60.0)

    def refill(self, now: float) -> None:
        self.level = min(self.holds, self.level + (now - self.stamp) * self.capacity / 60.0)
        self.stamp = now

    def seconds_until(self, amount: float) -> float:
        """Seconds until ``amount`` units are available."""
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing * 60.0 / self.capacity

    def seconds_until_full(self) -> float:
        return (self.holds - self.level) * 60.0 / self.capacity


@dataclass
class Limits:
    """Requests- and tokens-per-minute limits, charged at admission like the real API."""

    rpm: int | None
    tpm: int | None
    #: Seconds of each limit the API lets through at once (see :class:`Bucket`).
    window: float = 60.0
    requests: Bucket | None = field(init=False)
    tokens: Bucket | None = field(init=False)

    def __post_init__(self) -> None:
        self.requests = Bucket(self.rpm, self.window) if self.rpm else None
        self.tokens = Bucket(self.tpm, self.window) if self.tpm else None

    def admit(self, tokens: int) -> tuple[str, float] | None:
        """Charge one request of ``tokens``; None if admitted, else (kind, seconds to wait):
        infinite for a request larger than the per-minute budget itself."""
        now = time.monotonic()
        for bucket in (self.requests, self.tokens):
            if bucket:
                bucket.refill(now)
        if self.requests and self.requests.level < 1:
            return "requests", self.requests.seconds_until(1)
        if self.tokens and tokens > self.tokens.capacity:
            return "tokens", math.inf  # more than a minute's budget: never admitted
        # A request larger than a short window holds goes once the bucket is full.
        if self.tokens and self.tokens.level < min(tokens, self.tokens.holds):
            return "tokens", self.tokens.seconds_until(min(tokens, self.tokens.holds))
        if self.requests:
            self.requests.level -= 1
        if self.tokens:
            self.tokens.level -= tokens
        return None

    def headers(self) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers for the current state."""
        out: dict[str, str] = {}
        for name, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            if bucket:
                out[f"x-ratelimit-limit-{name}"] = str(int(bucket.capacity))
                out[f"x-ratelimit-remaining-{name}"] = str(max(0, int(bucket.level)))
                out[f"x-ratelimit-reset-{name}"] = go_duration(bucket.seconds_until_full())
        return out


def go_duration(seconds: float) -> str:
    """Format seconds the way the API does, as a Go duration: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)}m{round(secs, 3):g}s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)}h{int(minutes)}m{round(secs, 3):g}s"
