"""Small fakes of the model client and the throttle, for tests that reach docpipe's decisions
without the network or Redis. Each is contract-tested against the real component
(``tests/integration/test_fakes.py``), as dramatiq keeps its stub broker beside the real ones.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipelines.tokens import admission_tokens
from workers.admission.limiter import Budget, cooldown_seconds
from workers.admission.throttle import Park, Ticket, TooLarge, endpoint_of
from workers.db.models import utcnow
from workers.errors import RateLimitedError, TransientError, Usage
from workers.items.engine import Engine
from workers.items.group import process_items
from workers.items.processing import Outcome
from workers.llm.client import CallResult
from workers.llm.errors import classify_status
from workers.settings import Settings

#: An answer in the ``summarise`` pipeline's schema.
SUMMARY: dict[str, Any] = {"summary": "A fake summary.", "key_points": ["one"],
                           "topics": ["fakes"], "language": "en"}


@dataclass(frozen=True)
class Reply:
    """What the fake API answers to one call: an output, or an HTTP error."""

    output: Any = field(default_factory=lambda: dict(SUMMARY))
    status: int = 200
    code: str | None = None
    kind: str | None = None
    message: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    usage: Usage = field(default_factory=lambda: Usage(input_tokens=20, output_tokens=10))

    @classmethod
    def error(cls, status: int, code: str | None = None, message: str = "refused", *,
              kind: str | None = None, headers: Mapping[str, str] | None = None) -> Reply:
        return cls(status=status, code=code, kind=kind, message=message,
                   headers=dict(headers or {}), usage=Usage())


class FakeClient:
    """:class:`workers.llm.client.AsyncResponsesClient` answering from a script, no network.

    Replies are taken in order; once the script runs out, ``default`` answers. Errors are
    classified by the same function the real client uses, so a fake 429 is the real 429.
    """

    def __init__(self, *replies: Reply, default: Reply | None = None) -> None:
        self.script: deque[Reply] = deque(replies)
        self.default = default or Reply()
        self.bodies: list[dict[str, Any]] = []

    async def create(self, body: dict[str, Any]) -> CallResult:
        """Answer one request; never raises, like the real client."""
        return self.answer(body)

    def answer(self, body: dict[str, Any]) -> CallResult:
        """:meth:`create`, outside an event loop."""
        self.bodies.append(body)
        reply = self.script.popleft() if self.script else self.default
        model = str(body.get("model", ""))
        call = CallResult(model=model, started_at=utcnow(), latency_ms=1,
                          http_status=reply.status, request_id=f"req_fake_{len(self.bodies)}",
                          usage=reply.usage, headers=dict(reply.headers))
        if reply.status >= 400:
            call.error = classify_status(reply.status, code=reply.code, kind=reply.kind,
                                         message=reply.message, headers=call.headers,
                                         request_id=call.request_id)
            return call
        call.response_id = f"resp_fake_{len(self.bodies)}"
        call.output_text = (reply.output if isinstance(reply.output, str)
                            else json.dumps(reply.output))
        return call

    async def close(self) -> None:
        """Nothing to close."""


class FakeThrottle:
    """:class:`workers.admission.throttle.Throttle` in memory, for one process.

    It keeps what the real one promises a caller: a call larger than the model's tokens per
    minute is too large; a 429 cools the model down for what the API asked, and calls inside
    a cooldown longer than the inline wait are parked for budget; ``breaker_min_calls``
    transient failures in a row open the breaker, and calls are parked until it closes.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.endpoint = endpoint_of(settings.openai_base_url)
        self.cooling_until: dict[str, float] = {}
        self.epochs: dict[str, int] = {}
        self.failures_in_a_row = 0
        self.open_until = 0.0
        self.admitted: list[Ticket] = []
        self.not_sent: list[Ticket] = []
        self.settled: list[tuple[Ticket, CallResult]] = []

    def budget(self, model: str) -> Budget:
        limits = self.settings.model_limits.get(model)
        return Budget(rpm=limits.rpm, tpm=limits.tpm) if limits else Budget()

    def _admit_one(self, body: dict[str, Any]) -> Ticket | Park | TooLarge:
        """Admit a call of ``body`` at once, or say why not."""
        now = time.monotonic()
        if now < self.open_until:
            return Park(self.open_until - now, "circuit_open")
        model = str(body.get("model", ""))
        budget, estimate = self.budget(model), admission_tokens(body)
        if not self.settings.ratelimit_enabled:
            return self._admit(Ticket(None, self.endpoint, budget, estimate, 0.0))
        key = f"{self.endpoint}|{model}"
        if budget.tpm is not None and estimate > budget.tpm:
            return TooLarge(estimate, budget.tpm)
        wait = self.cooling_until.get(key, 0.0) - now
        if wait > self.settings.max_inline_wait_seconds:
            return Park(wait, "budget")
        return self._admit(Ticket(key, self.endpoint, budget, estimate, max(0.0, wait),
                                  epoch=self.epochs.get(key, 0)))

    def before_calls(self, bodies: Sequence[dict[str, Any]], *, max_wait: float | None = None,
                     learning_wait: float | None = None) -> list[Ticket | Park | TooLarge]:
        return [self._admit_one(body) for body in bodies]

    def unused(self, tickets: Sequence[Ticket]) -> None:
        """Tickets whose calls were not sent (the fake has no budget probe to give back)."""
        self.not_sent.extend(tickets)

    def still_valid(self, ticket: Ticket) -> bool:
        return ticket.key is None or ticket.waited <= 0 or \
            self.epochs.get(ticket.key, 0) == ticket.epoch

    def _settle_one(self, ticket: Ticket, call: CallResult) -> float | None:
        """Learn from the answer; the cooldown a 429 asked for, else None."""
        self.settled.append((ticket, call))
        cooldown = None
        if isinstance(call.error, RateLimitedError):
            cooldown = cooldown_seconds(call.headers, call.error.retry_after)
            if ticket.key is not None:
                self.cooling_until[ticket.key] = time.monotonic() + cooldown
                self.epochs[ticket.key] = self.epochs.get(ticket.key, 0) + 1
        if isinstance(call.error, TransientError):
            self.failures_in_a_row += 1
            if self.failures_in_a_row >= self.settings.breaker_min_calls:
                self.open_until = time.monotonic() + self.settings.breaker_open_seconds
        else:
            self.failures_in_a_row = 0
        return cooldown

    def settle_calls(self, calls: Sequence[tuple[Ticket, CallResult]]) -> list[float | None]:
        return [self._settle_one(ticket, call) for ticket, call in calls]

    def _admit(self, ticket: Ticket) -> Ticket:
        self.admitted.append(ticket)
        return ticket


def process_one(item_id: int, *, settings: Settings, client: FakeClient,
                throttle: Any) -> Outcome:
    """One item through the one flow every live item takes (a group of one on an engine
    whose client is ``client``), with its outcome once its answer is written."""
    engine = Engine(lambda: client, in_flight=1)  # type: ignore[arg-type, return-value]
    try:
        return process_items([item_id], settings=settings, engine=engine,
                             throttle=throttle).wait(30)[item_id]
    finally:
        engine.close()
