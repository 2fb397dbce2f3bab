"""A group of items processed together, paying the fixed costs once per group.

One task message carries a group of item ids. Its thread, in order:

1. takes as many of the engine's slots as the group has items, before anything is claimed;
2. claims the group in one conditional UPDATE (suspects, items on their last chance before
   quarantine for lost workers, are left out: each runs afterwards as a group of one, claimed
   under the worker's last-chance lock, held until its answer is written);
3. builds the requests and admits every call through the breaker and the limiter in one
   Redis round trip;
4. writes every call's ``in_flight`` attempt row before any request is sent, in one INSERT
   (a call of a run with a budget holds its worst case first, one conditional update each);
5. hands the calls to the process's event loop (:mod:`workers.items.engine`) and returns:
   the task's message is acknowledged then, and the database owns the claimed items.

The process's one :class:`~workers.items.writer.Writer` writes the answers of every group as
they come, a few per transaction, flushed at most ``FLUSH_SECONDS`` after the first of them
arrived (a kill loses what is in flight, and at most that much more), and gives each call's
slot back once its answer is written. A database restart is waited out before answers are
given up. After a group's last write, it checks each of its runs' end once and tells the
task's follow-up.

Every decision is the decision core's (:mod:`workers.items.decide`), through the steps of
:mod:`workers.items.processing`. This is the one flow of every live item: a suspect is a
group of one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from decimal import Decimal

from sqlalchemy.orm import Session

from workers.admission.throttle import Park, Throttle, Ticket, TooLarge
from workers.db import repository as repo
from workers.db.session import retry_outage, session_scope
from workers.errors import ItemError
from workers.items import processing
from workers.items.decide import Policy, alone_from, decide
from workers.items.engine import Engine, Halted, Voided, halts
from workers.items.processing import Outcome, Ready
from workers.items.rows import known_of
from workers.items.writer import writer
from workers.llm.client import CallResult
from workers.ops import metrics
from workers.process import alone, holding, memory
from workers.process.local import PerProcess
from workers.settings import Settings

log = logging.getLogger("docpipe.items")

#: A group is claimed once this share of the process's slots (1/n) is free, or its whole
#: message fits: smaller groups would keep the slots busier and pay the fixed costs of a
#: claim (a transaction, an admission round trip, an INSERT) for fewer items.
SLOTS_PER_CLAIM = 16


class OpenRuns:
    """How many items of each run this process holds in groups not yet finished.

    A run cannot end while one of its items is open here, so of a run's groups in this
    process only the last to finish asks the database whether the run has ended: one
    transaction per run and process at the end, not one per group all along.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: Counter[int] = Counter()

    def opened(self, items: list[repo.ClaimedItem]) -> None:
        with self._lock:
            self._open.update(item.run_id for item in items)

    def closed(self, items: list[repo.ClaimedItem]) -> set[int]:
        """Close ``items``; returns their runs of which none is open here any more."""
        with self._lock:
            self._open.subtract(item.run_id for item in items)
            done = {item.run_id for item in items if self._open[item.run_id] <= 0}
            for run_id in done:
                del self._open[run_id]
        return done


_open_runs: PerProcess[None, OpenRuns] = PerProcess()


class Unreleased:
    """Items this process could not release after an error in docpipe's services (the
    database away past every wait): held still, their leases renewed by the heartbeat, and
    released by it (:meth:`release`) once the database answers.

    A live holder that let an item's lease run out would leave it for the lease's length (10
    minutes by default), and its next claim would count a lost worker for what was an
    outage.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[int, tuple[repo.ClaimedItem, Exception]] = {}

    def keep(self, item: repo.ClaimedItem, exc: Exception) -> None:
        with self._lock:
            if item.id in self._items:
                return
            self._items[item.id] = (item, exc)
        holding.hold([item.id])

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def release(self, settings: Settings) -> int:
        """Write the releases kept, until one fails (the database is still away: the next
        call tries again). Returns how many were written."""
        with self._lock:
            kept = list(self._items.values())
        written = 0
        for item, exc in kept:
            try:
                processing.write_release(item, exc, settings=settings)
            except Exception as error:
                log.info("%d items still wait for their release (%s)", len(kept) - written,
                         type(error).__name__)
                break
            with self._lock:
                self._items.pop(item.id, None)
            holding.release([item.id])
            written += 1
        return written


_unreleased: PerProcess[None, Unreleased] = PerProcess()


def unreleased() -> Unreleased:
    """This process's :class:`Unreleased`."""
    return _unreleased.get(None, Unreleased)


def open_runs() -> OpenRuns:
    """This process's :class:`OpenRuns`."""
    return _open_runs.get(None, OpenRuns)


class Submitted:
    """A task's items once their calls are sent: the outcomes known at once, and the rest as
    the writer (:class:`~workers.items.writer.Writer`) writes the answers. ``on_done`` gets
    every item's outcome when the last is written (in the writer's thread, or at once if no
    call was made)."""

    def __init__(self, ids: list[int], on_done: OnDone | None) -> None:
        self.ids = ids
        self.outcomes: dict[int, Outcome] = {item_id: Outcome("skipped") for item_id in ids}
        self._on_done = on_done
        self._lock = threading.Lock()
        self._open = 1  # the groups still writing, and the task until it has sent them all
        self._done = threading.Event()
        self._finished = False
        self._detached = False

    @property
    def pending(self) -> bool:
        """Some answers are still to be written."""
        return not self._done.is_set()

    def wait(self, timeout: float | None = None) -> dict[int, Outcome]:
        """Every item's outcome, once the last answer is written."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"items {self.ids} still have calls out")
        return self.outcomes

    def detach(self) -> bool:
        """The task returns before its last answer is written: ``on_done`` is told so. False
        if the last answer is already written (the task reports its end itself)."""
        with self._lock:
            if self._finished:
                return False
            self._detached = True
            return True

    def _opened(self) -> None:
        with self._lock:
            self._open += 1

    def _closed(self, outcomes: dict[int, Outcome]) -> None:
        with self._lock:
            self.outcomes |= outcomes
            self._open -= 1
            last = self._finished = self._open == 0
            detached = self._detached
        if not last:
            return
        holding.release(self.ids)
        try:
            if self._on_done is not None:
                self._on_done(self.outcomes, detached)
        except Exception:  # the items are written; only their follow-up is lost
            log.exception("the follow-up of items %s failed", self.ids)
        finally:
            self._done.set()


#: What a task does once all of its items are written: their outcomes by id, and whether
#: the task had returned before (:meth:`Submitted.detach`).
OnDone = Callable[[dict[int, Outcome], bool], None]


def process_items(item_ids: list[int], *, settings: Settings, engine: Engine,
                  throttle: Throttle, on_done: OnDone | None = None) -> Submitted:
    """Claim a group of items and send their calls; the process's writer writes the answers
    as they come (:class:`~workers.items.writer.Writer`). Returns once every call is sent, so
    the task's message is acknowledged then: the database, not the broker, owns a claimed
    item. Safe for any ids, any number of times, concurrently."""
    ids = list(dict.fromkeys(item_ids))
    submitted = Submitted(ids, on_done)
    # Held from before the claim to the last write: the heartbeat renews their leases.
    holding.hold(ids)
    try:
        _process_items(submitted, settings=settings, engine=engine, throttle=throttle)
    finally:
        submitted._closed({})
    return submitted


def _process_items(submitted: Submitted, *, settings: Settings, engine: Engine,
                   throttle: Throttle) -> None:
    ids = submitted.ids
    suspects: list[int] = []
    alone = alone_from(settings.max_worker_losses)
    waiting = ids
    # While admission holds claims back, the message waits (unacknowledged, its items in the
    # broker) for as long as a countdown message may: then its items are claimed and parked.
    held_until = time.monotonic() + settings.max_countdown_seconds
    while waiting:
        # As many as there are free slots, once a few are: a slot freed by an answer is
        # busy again within a claim, instead of idle until a whole group's worth is free.
        slots = engine.take(len(waiting), at_least=engine.in_flight // SLOTS_PER_CLAIM,
                            held_until=held_until)
        chunk, waiting = waiting[:slots], waiting[slots:]
        claimed_at = time.monotonic()
        try:
            # A database restart is waited out for as long as a holder may be silent; past
            # that the error goes up, and the task puts its message back (nothing of it is
            # claimed but what this process holds).
            claimed, found = retry_outage(lambda c=chunk: _claim(c, settings, alone),  # type: ignore[misc]
                                          seconds=settings.holder_timeout_seconds,
                                          what="claiming items")
            suspects += found
            engine.give_back(slots - len(claimed))
            slots = len(claimed)
            if claimed:
                group = _Group(list(claimed.values()), settings=settings, engine=engine,
                               throttle=throttle, submitted=submitted, claimed_at=claimed_at)
                slots = 0  # the group's now: it gives each back
                group.start()
        finally:
            engine.give_back(slots)
    for item_id in suspects:
        _start_alone(item_id, submitted, settings=settings, engine=engine, throttle=throttle)


def _claim(chunk: list[int], settings: Settings, alone: int
           ) -> tuple[dict[int, repo.ClaimedItem], list[int]]:
    """One transaction: the claim of ``chunk``, and the suspects among those not claimed."""
    with session_scope() as session:
        claimed = repo.claim_items(session, chunk, lease_seconds=settings.lease_seconds,
                                   holder=holding.token(), alone_from=alone)
        suspects = repo.suspects_among(session, [i for i in chunk if i not in claimed],
                                       alone_from=alone)
    return claimed, suspects


def _claim_alone(item_id: int, settings: Settings) -> repo.ClaimedItem | None:
    with session_scope() as session:
        return repo.claim_item(session, item_id, lease_seconds=settings.lease_seconds,
                               holder=holding.token())


def _start_alone(item_id: int, submitted: Submitted, *, settings: Settings, engine: Engine,
                 throttle: Throttle) -> None:
    """A suspect, as a group of one: one at a time in the whole worker (all of its processes
    die together), so that if it is a poison document, no other last-chance item is lost with
    it. Claimed only under the lock, which is let go once its answer is written."""
    release = alone.hold()
    slots = 0
    try:
        slots = engine.take(1)
        claimed_at = time.monotonic()
        item = retry_outage(lambda: _claim_alone(item_id, settings),
                            seconds=settings.holder_timeout_seconds, what="claiming an item")
        if item is None:  # done, or taken by another worker meanwhile
            return
        group = _Group([item], settings=settings, engine=engine, throttle=throttle,
                       submitted=submitted, claimed_at=claimed_at, on_end=release)
        slots = 0
        release = _nothing  # the group's now
        group.start()
    finally:
        engine.give_back(slots)
        release()


def _nothing() -> None:
    pass


@dataclass
class _Call:
    ready: Ready
    ticket: Ticket
    reserve: Decimal | None
    attempt_id: int = 0
    #: Until when a call waiting for its budget to be learned may wait before it parks.
    deadline: float = 0.0


def _begin_attempts(session: Session, calls: list[_Call]) -> list[_Call]:
    """Write each call's in-flight attempt row, in one INSERT (a call of a run with a budget
    holds its worst case against it first). Returns the calls a budget had no room for (they
    have no row)."""
    ids = repo.begin_attempts(session, [
        repo.NewAttempt(c.ready.item.id, c.ready.item.run_id, str(c.ready.body["model"]),
                        c.reserve) for c in calls], worker=processing.worker_name())
    over_budget = []
    for call, attempt_id in zip(calls, ids, strict=True):
        if attempt_id is None:
            over_budget.append(call)
        else:
            call.attempt_id = attempt_id
    return over_budget


class _Group:
    """One claimed group, from its requests to its last write. Holds a slot per item."""

    def __init__(self, items: list[repo.ClaimedItem], *, settings: Settings, engine: Engine,
                 throttle: Throttle, submitted: Submitted, claimed_at: float,
                 on_end: Callable[[], None] = lambda: None) -> None:
        self.items = items
        #: When the claim began (monotonic): a pause written later was not seen by it.
        self.claimed_at = claimed_at
        #: Called once the group is done with its items (a suspect's lock let go).
        self.on_end = on_end
        self.settings = settings
        self.engine = engine
        self.throttle = throttle
        self.submitted = submitted
        self.outcomes: dict[int, Outcome] = {}
        self.unused = len(items)  # slots not yet handed to a call
        self.pending: dict[Future[CallResult | Voided], _Call] = {}

    def start(self) -> None:
        """Everything up to the calls sent; then the writer has the group, or it is done."""
        self.submitted._opened()
        open_runs().opened(self.items)
        try:
            calls_out = self._run()
        except BaseException:
            # Not even their release could be written: the items' leases expire.
            open_runs().closed(self.items)
            self.on_end()
            self.submitted._closed(self.outcomes)
            raise
        if calls_out:
            writer().take(self)
        else:
            self.finish()

    def finish(self) -> None:
        """After the group's last write: its runs' ends, and its outcomes to the task."""
        try:
            self._finish_runs()
        except Exception:  # the reconciler ends the run instead
            log.exception("checking the end of the runs of items %s failed",
                          [item.id for item in self.items])
        self.on_end()
        self.submitted._closed(self.outcomes)

    def _run(self) -> bool:
        """Returns whether calls are out."""
        try:
            return self._send_all()
        except Exception as exc:
            for future, call in self.pending.items():
                # Its slot comes back when it ends (at once if it has).
                future.cancel()
                future.add_done_callback(
                    lambda f, c=call: self._ended(c, f))  # type: ignore[misc]
            self.pending.clear()
            self.release([item for item in self.items if item.id not in self.outcomes], exc)
            return False
        finally:
            self.engine.give_back(self.unused)  # slots no call took
            self.unused = 0

    def _send_all(self) -> bool:
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
            self.hand_up(reused)

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
        if parked:
            # Until the first of them could go, a new claim would only park its items too.
            self.engine.hold_back(min(park.seconds for _, park in parked))
        over_budget = retry_outage(lambda: self._begin(calls, parked, refused),
                                   seconds=self.settings.lease_seconds / 2,
                                   what="starting the calls' attempts")
        if over_budget:
            self.throttle.unused([c.ticket for c in over_budget])
            self._refuse([(c.ready.item, processing.over_budget(c.ready.item, c.reserve))
                          for c in over_budget if c.reserve is not None])
        sending = [c for c in calls if c.attempt_id]
        # The slots of items that make no call are free now.
        self.engine.give_back(self.unused - len(sending))
        self.unused = len(sending)
        self._send(sending)
        return bool(self.pending)

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
                call.ready.body, run_id=call.ready.item.run_id, claimed_at=self.claimed_at,
                delay=call.ticket.waited,
                recheck=lambda c=call: self.throttle.still_valid(c.ticket),  # type: ignore[misc]
                readmit=lambda c=call: self._readmit(c))  # type: ignore[misc]
            self.unused -= 1
            self.pending[future] = call

    def _readmit(self, call: _Call) -> float | Voided:
        """This delayed call has no slot (a 429 voided it, or the budget was being learned):
        ask the limiter again, for a delay the engine waits out without a thread."""
        # It may wait for the probe until its deadline, but once the budget is known, its
        # slot is reserved no further ahead than any call's (the inline wait): every call
        # that waited reserving up to the probe's deadline would promise the next minutes
        # at the estimates' pace, and park every later claim.
        learning_wait = max(0.0, call.deadline - time.monotonic()) \
            if call.ticket.learning else None
        (admission,) = self.throttle.before_calls([call.ready.body],
                                                  learning_wait=learning_wait)
        if not isinstance(admission, Ticket):
            return Voided(admission)
        # What the item waited in all, for its tally; the new slot's own epoch and estimate.
        call.ticket = replace(admission, waited=call.ticket.waited + admission.waited)
        return admission.waited

    def written(self, futures: list[Future[CallResult | Voided]]) -> None:
        """These calls' answers are written: their slots go back."""
        for future in futures:
            self._ended(self.pending.pop(future), future)

    def _ended(self, call: _Call, future: Future[CallResult | Voided]) -> None:
        # The memory guard names a call until its answer is written: reading a huge answer
        # is what takes a process past its limit.
        memory.end_call(call.attempt_id)
        if not future.cancelled() and future.exception() is None \
                and halts(future.result()):
            self.engine.halt_written(call.ready.item.run_id)
        self.engine.give_back()

    def write_voided(self, voided: list[tuple[_Call, object]]) -> None:
        """Calls never sent: their rows go, and their items park or are refused."""
        written: dict[int, Outcome] = {}
        with session_scope() as session:
            refused: list[tuple[repo.ClaimedItem, ItemError]] = []
            for call, admission in voided:
                item = call.ready.item
                repo.drop_attempt(session, call.attempt_id)
                if isinstance(admission, Halted):
                    # Back with a message: claimed again once its run is resumed (or at
                    # once, if it never was paused: the halting item was another's).
                    admission = Park(0.0, "run_paused")
                if isinstance(admission, Park):
                    with processing.item_context(item):
                        written[item.id] = processing.write_park(session, item, admission,
                                                                 settings=self.settings)
                else:
                    assert isinstance(admission, TooLarge)
                    refused.append((item, processing.too_large(admission)))
            written |= self._decide_refusals(session, refused)
        self.outcomes |= written

    def release(self, items: list[repo.ClaimedItem], exc: Exception) -> None:
        """Items whose answers could not be written: released after the error, as
        :func:`workers.items.processing.release_after` does. When not even that can be
        written, this process keeps them (:class:`Unreleased`) until it can be."""
        for item in items:
            try:
                self.outcomes[item.id] = processing.release_after(item, exc,
                                                                  settings=self.settings)
            except Exception:
                unreleased().keep(item, exc)
                self.outcomes[item.id] = Outcome("skipped")

    def hand_up(self, done: list[repo.ClaimedItem]) -> None:
        """After the results' commit: each reduce whose last part this was is sent with the
        part's follow-up."""
        for item_id, parent_id in processing.hand_up(done).items():
            self.outcomes[item_id] = replace(self.outcomes[item_id], send=(parent_id,))

    def _finish_runs(self) -> None:
        # After the group's last commit (see processing.finish_run_if_done), for the runs
        # of which it was this process's last open group.
        last_here = open_runs().closed(self.items)
        ended = {item.run_id for item in self.items
                 if self.outcomes.get(item.id, Outcome("skipped")).status
                 in ("succeeded", "reused", "failed")}
        for run_id in sorted(ended & last_here):
            processing.finish_run_if_done(run_id)
