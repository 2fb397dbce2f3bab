"""The item engine's event loop: every model call a worker process makes, on one loop.

Threads that block on an HTTP call each cost a stack and a share of the GIL, and hundreds of
them turn I/O-bound work into CPU-bound work. So a process keeps one ``asyncio`` loop in a
thread of its own, with one ``AsyncOpenAI`` client (one connection pool), and at most
``in_flight`` calls at a time on the wire. A group takes its slots before it claims, a few
more than ``in_flight`` in all: the next calls wait ready (claimed, admitted, on record) and
take the wire the moment a call ends, instead of after its answer is written and a new
claim is made. The group processor (:mod:`workers.items.group`) hands each call to it from a
Celery task thread, and the process's writer (:mod:`workers.items.writer`) reads the answer;
everything else (the database, Redis, the decision) stays in those threads, so the loop does
nothing but HTTP.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workers.errors import PauseRunError
from workers.llm.client import AsyncResponsesClient, CallResult
from workers.ops import metrics
from workers.process.local import PerProcess
from workers.settings import Settings


@dataclass(frozen=True)
class Halted:
    """A call of the run was answered with a run-wide error (:class:`PauseRunError`: a bad
    key, an unknown model, no quota) while this one waited for the wire: every call of the
    run would meet it, and the run is being paused."""

    run_id: int


@dataclass(frozen=True)
class Voided:
    """A call that was not sent. ``admission``: its delay's slot was voided while it waited
    (a 429), or never came (a budget being learned), and asking the limiter again gave this
    instead (the caller parks or refuses the item); or :class:`Halted`."""

    admission: object


def halts(result: object) -> bool:
    """Whether ``result`` halts its run's calls until its answer is written."""
    return isinstance(result, CallResult) and isinstance(result.error, PauseRunError)


#: Longest a halt holds its run's calls back without its answer written (a writer that
#: died): beyond it the calls go, and their own answers pause the run.
HALT_LIMIT_SECONDS = 600.0


@dataclass
class _Halt:
    open: int = 0  # answers halting the run, not yet written
    since: float = 0.0  # when the first of them came
    until: float = 0.0  # when the last was written: calls claimed before are not sent


#: Asked, after a call's delay, whether its slot still stands; else for a new admission:
#: the delay before the call may start (0: now), or :class:`Voided`. Both run in a thread:
#: they talk to Redis.
Recheck = Callable[[], bool]
Readmit = Callable[[], "float | Voided"]


class Engine:
    """One process's event loop and model client. Thread-safe: any thread may call."""

    def __init__(self, client: Callable[[], AsyncResponsesClient], *, in_flight: int,
                 ahead: int = 0) -> None:
        #: Calls on the wire at most.
        self.in_flight = in_flight
        #: The slots claims take: ``in_flight``, and ``ahead`` more for calls that wait
        #: ready for the wire. A call's slot is held until its answer is written.
        self.slots = in_flight + ahead
        self._free = self.slots
        # Bound to the engine's loop on first use.
        self._wire = asyncio.Semaphore(in_flight)
        self._halts: dict[int, _Halt] = {}
        self._halts_lock = threading.Lock()
        self._freed = threading.Condition()
        #: No slot is offered to a new claim before this (monotonic): see :meth:`hold_back`.
        self._held_until = 0.0
        #: Claims waiting for slots, first come first served.
        self._line: deque[object] = deque()
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._client: AsyncResponsesClient | None = None

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._client = client()
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="docpipe-engine", daemon=True)
        self._thread.start()
        ready.wait()

    def take(self, count: int, *, at_least: int | None = None,
             held_until: float | None = None) -> int:
        """Wait until ``at_least`` (default: all ``count``) of the :attr:`slots` are free,
        take up to ``count`` of them and return how many. A group takes its slots before it
        claims its items, so nothing is claimed, leased or held against a budget while it
        waits. Claims take their turns in the order they came: one that lost every race for
        freed slots would leave its items, early in the run, to start last. While admission
        holds claims back (:meth:`hold_back`), it waits for that too, until ``held_until``
        (monotonic; None: not at all), out of the line."""
        count = min(count, self.slots)
        need = count if at_least is None else max(1, min(at_least, count))
        turn = object()
        with self._freed:
            try:
                while True:
                    held = 0.0 if held_until is None else \
                        min(self._held_until, held_until) - time.monotonic()
                    if held > 0:
                        self._leave(turn)
                        self._freed.wait(held)
                        continue
                    if turn not in self._line:
                        self._line.append(turn)
                    if self._line[0] is turn and self._free >= need:
                        break
                    self._freed.wait()
                taken = min(count, self._free)
                self._free -= taken
            finally:
                self._leave(turn)
        return taken

    def _leave(self, turn: object) -> None:
        if turn in self._line:
            self._line.remove(turn)
            self._freed.notify_all()  # the next in line may go

    def hold_back(self, seconds: float) -> None:
        """Admission parked calls for ``seconds`` (a budget spent, the breaker open): offer
        no slot to a new claim until then, so that queued items wait in the broker rather
        than being claimed only to be parked."""
        with self._freed:
            self._held_until = max(self._held_until, time.monotonic() + seconds)

    def release_hold(self) -> None:
        """Calls were settled: the budget they over-reserved is back, so the next claim asks
        admission again rather than wait out a hold computed before."""
        with self._freed:
            if self._held_until:
                self._held_until = 0.0
                self._freed.notify_all()

    def held_back(self) -> float:
        """Seconds left before claims are offered slots again (0: they are)."""
        with self._freed:
            return max(0.0, self._held_until - time.monotonic())

    def give_back(self, count: int = 1) -> None:
        """Free ``count`` slots: calls answered, or items that need no call."""
        if count <= 0:
            return
        with self._freed:
            self._free += count
            self._freed.notify_all()

    def call(self, body: dict[str, Any], *, run_id: int = 0, claimed_at: float = 0.0,
             delay: float = 0.0, recheck: Recheck | None = None,
             readmit: Readmit | None = None) -> concurrent.futures.Future[CallResult | Voided]:
        """Send ``body`` after ``delay`` seconds, once the wire has room, in a slot the
        caller took (:meth:`take`) and gives back (:meth:`give_back`) once it has written the
        answer.

        A delayed call asks ``recheck`` first; if its slot was voided, ``readmit`` gives a new
        delay (waited here, then checked the same way) or the future's :class:`Voided`. A call
        of run ``run_id`` claimed (monotonic) at ``claimed_at`` is not sent if its run was
        halted meanwhile (:class:`Halted`).
        """
        return asyncio.run_coroutine_threadsafe(
            self._call(body, run_id, claimed_at, delay, recheck, readmit), self._loop)

    async def _call(self, body: dict[str, Any], run_id: int, claimed_at: float, delay: float,
                    recheck: Recheck | None, readmit: Readmit | None) -> CallResult | Voided:
        assert self._client is not None
        while delay > 0:
            await asyncio.sleep(delay)
            if recheck is None or await asyncio.to_thread(recheck):
                break
            assert readmit is not None
            again = await asyncio.to_thread(readmit)
            if isinstance(again, Voided):
                return again
            delay = again
        async with self._wire:
            if self._halted(run_id, claimed_at):
                return Voided(Halted(run_id))
            gauge = metrics.IN_FLIGHT.labels(str(body.get("model", "")))
            gauge.inc()
            try:
                result = await self._client.create(body)
            finally:
                gauge.dec()
            if halts(result):  # before the next call of the run takes the wire
                self._halt(run_id)
            return result

    def _halted(self, run_id: int, claimed_at: float) -> bool:
        with self._halts_lock:
            halt = self._halts.get(run_id)
            if halt is None:
                return False
            if halt.open and time.monotonic() - halt.since < HALT_LIMIT_SECONDS:
                return True
            # Claimed before the pause was written: a later claim would not have had it.
            return claimed_at < halt.until

    def _halt(self, run_id: int) -> None:
        with self._halts_lock:
            halt = self._halts.setdefault(run_id, _Halt())
            if not halt.open:
                halt.since = time.monotonic()
            halt.open += 1

    def halt_written(self, run_id: int) -> None:
        """An answer that halted ``run_id`` (:func:`halts`) is written (its run paused, or
        the item found another worker's): calls of the run claimed from now on go."""
        now = time.monotonic()
        with self._halts_lock:
            halt = self._halts.get(run_id)
            if halt is None or not halt.open:
                return
            halt.open -= 1
            halt.until = now
            for stale in [r for r, h in self._halts.items()
                          if not h.open and now - h.until > HALT_LIMIT_SECONDS]:
                del self._halts[stale]

    def close(self) -> None:
        """Close the client and stop the loop (for tests; a worker's loop lives with it)."""
        if self._client is not None:
            asyncio.run_coroutine_threadsafe(self._client.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


_engines: PerProcess[None, Engine] = PerProcess()

#: Calls claimed ahead of the wire: a quarter of the calls in flight (none below 4, where a
#: call held ready would be a large share of what a budget holds). At 256 in flight, an
#: eighth kept 94% of the calls out while items waited, a quarter 96%.
AHEAD_SHARE = 4


def item_engine(settings: Settings) -> Engine:
    """This process's engine (made anew in a forked child: a loop does not survive a fork)."""
    from workers.llm.client import api_key

    key = api_key(settings)
    return _engines.get(None, lambda: Engine(
        lambda: AsyncResponsesClient(api_key=key, base_url=settings.openai_base_url,
                                     timeout=settings.request_timeout_seconds),
        in_flight=settings.calls_in_flight,
        ahead=settings.calls_in_flight // AHEAD_SHARE))
