"""A group of items processed together, paying the fixed costs once per group.

One task message carries a group of item ids. Its thread, in order:

1. takes as many of the engine's slots as the group has items, before anything is claimed;
2. claims the group in one conditional UPDATE (suspects, items on their last chance before
   quarantine for lost workers, are left out: they run alone afterwards, through
   :func:`workers.items.processing.process_item`);
3. builds the requests and admits every call through the breaker and the limiter in one
   Redis round trip;
4. writes every call's ``in_flight`` attempt row before any request is sent, in one INSERT
   (a call of a run with a budget holds its worst case first, one conditional update each);
5. hands the calls to the process's event loop (:mod:`workers.items.engine`), and writes
   the answers as they come, a few per transaction, flushed at most ``FLUSH_SECONDS`` after
   the first of them arrived: a kill loses what is in flight, and at most that much more;
6. checks each run's end once, after the group's last commit.

Every decision is the decision core's (:mod:`workers.items.decide`), through the same steps
as the one-item path (:mod:`workers.items.processing`): both are one code path per step.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, replace
from decimal import Decimal

from sqlalchemy.orm import Session

from workers.admission.throttle import Park, Throttle, Ticket, TooLarge
from workers.db import repository as repo
from workers.db.session import session_scope
from workers.errors import ItemError
from workers.items import processing
from workers.items.decide import Policy, Succeed, alone_from, decide
from workers.items.engine import Engine, Voided
from workers.items.processing import Answer, Outcome, Ready
from workers.items.rows import known_of
from workers.llm.client import CallResult, ResponsesClient
from workers.ops import metrics
from workers.process import holding, memory
from workers.settings import Settings

log = logging.getLogger("docpipe.items")

#: Longest an answered call waits for its write: what a kill can lose beyond the calls in
#: flight.
FLUSH_SECONDS = 0.1
#: Most answers written in one transaction.
FLUSH_MAX = 32


def process_items(item_ids: list[int], *, settings: Settings, engine: Engine,
                  throttle: Throttle, client: ResponsesClient) -> dict[int, Outcome]:
    """Process a group of items. Safe for any ids, any number of times, concurrently."""
    ids = list(dict.fromkeys(item_ids))
    # Held here from before the claim to the last write: the heartbeat renews their leases.
    with holding.holding(ids):
        return _process_items(ids, settings=settings, engine=engine, throttle=throttle,
                              client=client)


def _process_items(ids: list[int], *, settings: Settings, engine: Engine,
                   throttle: Throttle, client: ResponsesClient) -> dict[int, Outcome]:
    outcomes = {item_id: Outcome("skipped") for item_id in ids}
    suspects: list[int] = []
    alone = alone_from(settings.max_worker_losses)
    for start in range(0, len(ids), engine.in_flight):
        chunk = ids[start : start + engine.in_flight]
        slots = engine.take(len(chunk))
        try:
            with session_scope() as session:
                claimed = repo.claim_items(session, chunk, lease_seconds=settings.lease_seconds,
                                           holder=holding.token(), alone_from=alone)
                suspects += repo.suspects_among(
                    session, [i for i in chunk if i not in claimed], alone_from=alone)
            engine.give_back(slots - len(claimed))
            slots = len(claimed)
            if claimed:
                group = _Group(list(claimed.values()), settings=settings, engine=engine,
                               throttle=throttle)
                slots = 0  # the group's now: it gives each back
                outcomes |= group.run()
        finally:
            engine.give_back(slots)
    # Alone, one at a time, so that a poison document's last chance loses no other item.
    for item_id in suspects:
        outcomes[item_id] = processing.process_item(item_id, settings=settings, client=client,
                                                    throttle=throttle)
    return outcomes


@dataclass
class _Call:
    ready: Ready
    ticket: Ticket
    reserve: Decimal | None
    attempt_id: int = 0
    #: Until when a call waiting for its budget to be learned may wait before it parks.
    deadline: float = 0.0


def _begin_attempts(session: Session, calls: list[_Call]) -> list[_Call]:
    """Write each call's in-flight attempt row: one INSERT for the calls of runs without a
    budget, one conditional row each for those that hold their worst case against it.
    Returns the calls a budget had no room for (they have no row)."""
    worker = processing.worker_name()
    free = [c for c in calls if c.reserve is None]
    ids = repo.begin_attempts(session, [
        repo.NewAttempt(c.ready.item.id, c.ready.item.run_id, str(c.ready.body["model"]))
        for c in free], worker=worker)
    for call, attempt_id in zip(free, ids, strict=True):
        call.attempt_id = attempt_id
    over_budget = []
    for call in calls:
        if call.reserve is not None:
            item = call.ready.item
            held = repo.begin_attempt(session, item_id=item.id, run_id=item.run_id,
                                      model=str(call.ready.body["model"]), worker=worker,
                                      reserve_usd=call.reserve)
            if held is None:
                over_budget.append(call)
            else:
                call.attempt_id = held
    return over_budget


class _Group:
    """One claimed group, from its requests to its last write. Holds a slot per item."""

    def __init__(self, items: list[repo.ClaimedItem], *, settings: Settings, engine: Engine,
                 throttle: Throttle) -> None:
        self.items = items
        self.settings = settings
        self.engine = engine
        self.throttle = throttle
        self.outcomes: dict[int, Outcome] = {}
        self.unused = len(items)  # slots not yet handed to a call
        self.pending: dict[Future[CallResult | Voided], _Call] = {}

    def run(self) -> dict[int, Outcome]:
        try:
            self._run()
        except Exception as exc:
            for future, call in self.pending.items():
                # Its slot comes back when it ends (at once if it has).
                future.cancel()
                future.add_done_callback(lambda _: self.engine.give_back())
                memory.end_call(call.attempt_id)
            for item in self.items:
                if item.id not in self.outcomes:
                    self.outcomes[item.id] = processing.release_after(
                        item, exc, settings=self.settings)
        finally:
            self.engine.give_back(self.unused)  # slots no call took
            self.unused = 0
        return self.outcomes

    def _run(self) -> None:
        ready: list[Ready] = []
        refused: list[tuple[repo.ClaimedItem, ItemError]] = []
        reused: list[repo.ClaimedItem] = []
        for item in self.items:
            prepared = processing.prepare(item, self.settings)
            if prepared is None:
                reused.append(item)
            elif isinstance(prepared, ItemError):
                refused.append((item, prepared))
            else:
                ready.append(prepared)
        if reused:
            with session_scope() as session:
                for item in reused:
                    assert item.stored_result_id is not None
                    repo.reuse_result(session, item.id, item.stored_result_id)
            self.outcomes |= {item.id: Outcome("reused") for item in reused}
            self._hand_up(reused)

        calls: list[_Call] = []
        parked: list[tuple[repo.ClaimedItem, Park]] = []
        # A call waiting for the probe that learns its budget waits as long as the probe may
        # take: nothing of that budget could be sent meanwhile anyway.
        learning_wait = max(self.settings.max_inline_wait_seconds,
                            self.settings.request_timeout_seconds)
        for prepared, admission in zip(
                ready, self.throttle.before_calls([r.body for r in ready]), strict=True):
            if isinstance(admission, Park):
                parked.append((prepared.item, admission))
            elif isinstance(admission, TooLarge):
                refused.append((prepared.item, processing.too_large(admission)))
            else:
                calls.append(_Call(prepared, admission,
                                   processing.reserve_for(prepared, admission, self.settings),
                                   deadline=time.monotonic() + learning_wait))
        over_budget = self._begin(calls, parked, refused)
        if over_budget:
            self.throttle.unused([c.ticket for c in over_budget])
            self._refuse([(c.ready.item, processing.over_budget(c.ready.item, c.reserve))
                          for c in over_budget if c.reserve is not None])
        sending = [c for c in calls if c.attempt_id]
        # The slots of items that make no call are free now.
        self.engine.give_back(self.unused - len(sending))
        self.unused = len(sending)
        self._send(sending)
        self._collect()
        self._finish_runs()

    def _begin(self, calls: list[_Call], parked: list[tuple[repo.ClaimedItem, Park]],
               refused: list[tuple[repo.ClaimedItem, ItemError]]) -> list[_Call]:
        """One transaction: the parks, the refusals, and every call's attempt row. Returns
        the calls a budget had no room for."""
        written: dict[int, Outcome] = {}
        with session_scope() as session:
            lost = repo.taken_over(
                session, [i.id for i, _ in parked] + [i.id for i, _ in refused]
                + [c.ready.item.id for c in calls], holder=holding.token())
            if lost:
                # Found dead between its claim and here (a stopped process): another
                # worker's now. Their calls are not sent.
                written |= {item_id: Outcome("skipped") for item_id in lost}
                parked = [(i, p) for i, p in parked if i.id not in lost]
                refused[:] = [(i, e) for i, e in refused if i.id not in lost]
                self.throttle.unused([c.ticket for c in calls if c.ready.item.id in lost])
                calls[:] = [c for c in calls if c.ready.item.id not in lost]
            for item, park in parked:
                with processing.item_context(item):
                    written[item.id] = processing.write_park(session, item, park,
                                                             settings=self.settings)
            written |= self._decide_refusals(session, refused)
            over_budget = _begin_attempts(session, calls)
        self.outcomes |= written
        return over_budget

    def _refuse(self, refused: list[tuple[repo.ClaimedItem, ItemError]]) -> None:
        with session_scope() as session:
            written = self._decide_refusals(session, refused)
        self.outcomes |= written

    def _decide_refusals(self, session: Session,
                         refused: list[tuple[repo.ClaimedItem, ItemError]]
                         ) -> dict[int, Outcome]:
        policy = Policy.of(self.settings)
        written = {}
        for item, error in refused:
            with processing.item_context(item):
                written[item.id] = processing.write_decision(
                    session, item, decide(known_of(session, item, error), policy),
                    settings=self.settings)
        return written

    def _send(self, calls: list[_Call]) -> None:
        for call in calls:
            memory.begin_call(call.ready.item.id, call.attempt_id)
            metrics.record_admission(call.ticket.waited)
            future = self.engine.call(
                call.ready.body, delay=call.ticket.waited,
                recheck=lambda c=call: self.throttle.still_valid(c.ticket),  # type: ignore[misc]
                readmit=lambda c=call: self._readmit(c))  # type: ignore[misc]
            self.unused -= 1
            self.pending[future] = call

    def _readmit(self, call: _Call) -> float | Voided:
        """This delayed call has no slot (a 429 voided it, or the budget was being learned):
        ask the limiter again, for a delay the engine waits out without a thread."""
        max_wait = max(0.0, call.deadline - time.monotonic()) if call.ticket.learning \
            else self.settings.max_inline_wait_seconds
        (admission,) = self.throttle.before_calls([call.ready.body], max_wait=max_wait)
        if not isinstance(admission, Ticket):
            return Voided(admission)
        # What the item waited in all, for its tally; the new slot's own epoch and estimate.
        call.ticket = replace(admission, waited=call.ticket.waited + admission.waited)
        return admission.waited

    def _collect(self) -> None:
        """Wait for the calls; write their answers in small transactions as they come.

        A call's slot is given back once its answer is written, not when the HTTP call ends:
        until then it still holds its item's lease, its budget reserve and its memory.
        """
        buffer: list[tuple[Future[CallResult | Voided], _Call, Answer]] = []
        voided: list[tuple[Future[CallResult | Voided], _Call, object]] = []
        first_at = 0.0
        waiting = set(self.pending)
        while waiting or buffer:
            timeout = None if not buffer else max(0.0, first_at + FLUSH_SECONDS
                                                  - time.monotonic())
            done: set[Future[CallResult | Voided]] = set()
            if waiting:
                done, waiting = wait(waiting, timeout=timeout, return_when=FIRST_COMPLETED)
            for future in done:
                call = self.pending[future]
                result = future.result()
                if isinstance(result, Voided):
                    voided.append((future, call, result.admission))
                    continue
                if not buffer:
                    first_at = time.monotonic()
                with processing.item_context(call.ready.item, request_id=result.request_id):
                    answer = processing.answer_of(call.ready, result, call.attempt_id,
                                                  reserve=call.reserve, settings=self.settings)
                buffer.append((future, call, answer))
            # A budget probe's answer is written at once: the fleet waits for its headers.
            if buffer and (not waiting or len(buffer) >= FLUSH_MAX
                           or time.monotonic() - first_at >= FLUSH_SECONDS
                           or any(call.ticket.probe for _, call, _ in buffer)):
                self._write([(call, answer) for _, call, answer in buffer])
                self._written([future for future, _, _ in buffer])
                buffer = []
        if voided:
            self._write_voided([(call, admission) for _, call, admission in voided])
            self._written([future for future, _, _ in voided])

    def _written(self, futures: list[Future[CallResult | Voided]]) -> None:
        # The memory guard names a call until its answer is written: reading a huge answer
        # is what takes a process past its limit.
        for future in futures:
            memory.end_call(self.pending.pop(future).attempt_id)
        self.engine.give_back(len(futures))

    def _write(self, answered: list[tuple[_Call, Answer]]) -> None:
        cooldowns = self.throttle.settle_calls([(c.ticket, a.call) for c, a in answered])
        written: dict[int, Outcome] = {}
        with session_scope() as session:
            lost = processing.taken_over(session, [(c.ready, a) for c, a in answered])
            written |= {item_id: Outcome("skipped") for item_id in lost}
            succeeded: list[tuple[Ready, Answer, float]] = []
            for (call, answer), cooldown in zip(answered, cooldowns, strict=True):
                if call.ready.item.id in lost:
                    continue
                with processing.item_context(call.ready.item,
                                             request_id=answer.call.request_id):
                    decision = processing.decide_answer(session, call.ready, answer,
                                                        cooldown=cooldown,
                                                        settings=self.settings)
                    if isinstance(decision, Succeed):
                        succeeded.append((call.ready, answer, call.ticket.waited))
                        continue
                    written[call.ready.item.id] = processing.write_answer(
                        session, call.ready, answer, decision, settings=self.settings)
            written |= processing.write_successes(session, succeeded)
        self.outcomes |= written
        self._hand_up([c.ready.item for c, _ in answered
                       if written[c.ready.item.id].status == "succeeded"])

    def _write_voided(self, voided: list[tuple[_Call, object]]) -> None:
        """Calls never sent: their rows go, and their items park or are refused."""
        written: dict[int, Outcome] = {}
        with session_scope() as session:
            refused: list[tuple[repo.ClaimedItem, ItemError]] = []
            for call, admission in voided:
                item = call.ready.item
                repo.drop_attempt(session, call.attempt_id)
                if isinstance(admission, Park):
                    with processing.item_context(item):
                        written[item.id] = processing.write_park(session, item, admission,
                                                                 settings=self.settings)
                else:
                    assert isinstance(admission, TooLarge)
                    refused.append((item, processing.too_large(admission)))
            written |= self._decide_refusals(session, refused)
        self.outcomes |= written

    def _hand_up(self, done: list[repo.ClaimedItem]) -> None:
        """After the results' commit: queue each reduce whose last part this was."""
        children = [item for item in done if item.parent_id is not None]
        if not children:
            return
        with session_scope() as session:
            for item in children:
                assert item.parent_id is not None
                if repo.unblock_parent(session, item.parent_id):
                    outcome = self.outcomes[item.id]
                    self.outcomes[item.id] = Outcome(outcome.status, send=(item.parent_id,))

    def _finish_runs(self) -> None:
        # Once per group, after its last commit (see processing.finish_run_if_done).
        ended = {item.run_id for item in self.items
                 if self.outcomes.get(item.id, Outcome("skipped")).status
                 in ("succeeded", "reused", "failed")}
        for run_id in sorted(ended):
            processing.finish_run_if_done(run_id)
