"""Each worker process's one writer of answers, across every group whose calls are out.

A group (:mod:`workers.items.group`) hands its calls' futures over once they are sent; the
writer reads each answer as it comes, decides and writes it with others in one transaction
(a few at a time, within ``FLUSH_SECONDS``), and gives the call's slot back once it is
written.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING

from workers.db import repository as repo
from workers.db.session import retry_outage, session_scope
from workers.items import processing
from workers.items.decide import Succeed
from workers.items.engine import Voided
from workers.items.processing import Answer, Outcome
from workers.llm.client import CallResult
from workers.process.local import PerProcess
from workers.settings import Settings

if TYPE_CHECKING:
    from workers.items.group import _Call as Call
    from workers.items.group import _Group as Group

log = logging.getLogger("docpipe.items")

#: Longest an answered call waits for its write: what a kill can lose beyond the calls in
#: flight.
FLUSH_SECONDS = 0.05
#: Most answers written in one transaction.
FLUSH_MAX = 32

_Entry = tuple["Group", Future[CallResult | Voided]]
#: A read answer waiting in the writer's buffer.
_Answered = tuple["Group", Future[CallResult | Voided], "Call", Answer]


class Writer:
    """This process's one writer of answers, across every group whose calls are out.

    Each call's future, once done, comes here; its answer is read, decided and written with
    others' (a few per transaction, flushed at most ``FLUSH_SECONDS`` after the first came,
    at once for a budget probe's), and its slot is given back once it is written: until
    then it still holds its item's lease, its budget reserve and its memory. A group whose
    last answer is written is finished (its runs' ends, its task's follow-up).
    """

    def __init__(self) -> None:
        self._done: queue.SimpleQueue[_Entry] = queue.SimpleQueue()
        self._open = 0  # calls handed over and not yet written
        self._idle = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="docpipe-writer", daemon=True)
        self._thread.start()

    def take(self, group: Group) -> None:
        """Write ``group``'s answers as its calls end."""
        with self._idle:
            self._open += len(group.pending)
        for future in list(group.pending):
            future.add_done_callback(self._arrived(group))

    def _arrived(self, group: Group) -> Callable[[Future[CallResult | Voided]], None]:
        def arrived(future: Future[CallResult | Voided]) -> None:
            self._done.put((group, future))
        return arrived

    def drain(self, timeout: float) -> bool:
        """Wait until every answer handed over is written (a worker shutting down lets its
        calls end first); False if some are still out after ``timeout`` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: self._open == 0, timeout=timeout)

    def _run(self) -> None:
        buffer: list[_Answered] = []
        first_at = 0.0
        while True:
            try:
                buffer, first_at = self._step(buffer, first_at)
            except Exception:  # the thread must outlive any one write
                log.exception("the writer failed; the items in its buffer are let go")
                for group, future, _, _ in buffer:
                    self._let_go(group, future)
                buffer = []

    def _step(self, buffer: list[_Answered], first_at: float
              ) -> tuple[list[_Answered], float]:
        """Take what has come, and flush the buffer if it is due; returns what is left."""
        timeout = None if not buffer else max(0.0, first_at + FLUSH_SECONDS
                                              - time.monotonic())
        try:
            entries = [self._done.get(timeout=timeout)]
        except queue.Empty:
            entries = []
        while len(entries) < FLUSH_MAX:
            try:
                entries.append(self._done.get_nowait())
            except queue.Empty:
                break
        for group, future in entries:
            answered = self._read(group, future)
            if answered is not None:
                if not buffer:
                    first_at = time.monotonic()
                buffer.append((group, future, *answered))
        with self._idle:
            everything_in = self._open == len(buffer)
        # A budget probe's answer is written at once: the fleet waits for its headers.
        if buffer and (everything_in or len(buffer) >= FLUSH_MAX
                       or time.monotonic() - first_at >= FLUSH_SECONDS
                       or any(call.ticket.probe for _, _, call, _ in buffer)):
            self._flush(buffer)
            buffer = []
        return buffer, first_at

    def _let_go(self, group: Group, future: Future[CallResult | Voided]) -> None:
        try:
            group.outcomes.setdefault(group.pending[future].ready.item.id, Outcome("skipped"))
            self._written(group, [future])
        except Exception:
            log.exception("letting go of a call of items %s failed",
                          [item.id for item in group.items])

    def _read(self, group: Group, future: Future[CallResult | Voided]
              ) -> tuple[Call, Answer] | None:
        """The call's answer to buffer, or None when it was written here at once (a call
        never sent, or one whose answer could not be read)."""
        call = group.pending[future]
        try:
            result = future.result()
            if isinstance(result, Voided):
                group.write_voided([(call, result.admission)])
                self._written(group, [future])
                return None
            with processing.item_context(call.ready.item, request_id=result.request_id):
                answer = processing.answer_of(call.ready.item, call.ready.pipeline, result,
                                              call.attempt_id, reserve=call.reserve,
                                              settings=group.settings)
        except Exception as exc:
            group.release([call.ready.item], exc)
            self._written(group, [future])
            return None
        return call, answer

    def _flush(self, buffer: list[_Answered]) -> None:
        try:
            _write_answers([(group, call, answer) for group, _, call, answer in buffer])
        except Exception as exc:
            for group, _, call, _ in buffer:
                group.release([call.ready.item], exc)
        by_group: dict[int, tuple[Group, list[Future[CallResult | Voided]]]] = {}
        for group, future, _, _ in buffer:
            by_group.setdefault(id(group), (group, []))[1].append(future)
        for group, futures in by_group.values():
            self._written(group, futures)

    def _written(self, group: Group, futures: list[Future[CallResult | Voided]]) -> None:
        group.written(futures)
        if not group.pending:
            group.finish()
        with self._idle:
            self._open -= len(futures)
            self._idle.notify_all()


def _write_answers(entries: list[tuple[Group, Call, Answer]]) -> None:
    """Write answers of any groups in one transaction, each as the decision core says."""
    throttle, settings = entries[0][0].throttle, entries[0][0].settings
    cooldowns = throttle.settle_calls([(c.ticket, a.call) for _, c, a in entries])
    if not any(cooldowns):  # a 429's cooldown keeps the hold
        entries[0][0].engine.release_hold()
    # The answers are paid for: a database restart is waited out (the items stay held, and
    # their leases renewed, meanwhile) before they are released unwritten.
    written = retry_outage(lambda: _write_decisions(entries, cooldowns, settings),
                           seconds=settings.lease_seconds / 2, what="writing answers")
    for group, call, _ in entries:
        group.outcomes[call.ready.item.id] = written[call.ready.item.id]
    done: dict[int, tuple[Group, list[repo.ClaimedItem]]] = {}
    for group, call, _ in entries:
        if written[call.ready.item.id].status == "succeeded":
            done.setdefault(id(group), (group, []))[1].append(call.ready.item)
    for group, items in done.values():
        group.hand_up(items)


def _write_decisions(entries: list[tuple[Group, Call, Answer]],
                     cooldowns: list[float | None], settings: Settings) -> dict[int, Outcome]:
    """One transaction: each answer's decision, written; the outcomes by item id."""
    written: dict[int, Outcome] = {}
    with session_scope() as session:
        lost = processing.taken_over(session, [(c.ready, a) for _, c, a in entries])
        written |= {item_id: Outcome("skipped") for item_id in lost}
        succeeded: list[tuple[repo.ClaimedItem, Answer, float]] = []
        for (_, call, answer), cooldown in zip(entries, cooldowns, strict=True):
            if call.ready.item.id in lost:
                continue
            with processing.item_context(call.ready.item, request_id=answer.call.request_id):
                decision = processing.decide_answer(session, call.ready.item, answer,
                                                    cooldown=cooldown, settings=settings)
                if isinstance(decision, Succeed):
                    succeeded.append((call.ready.item, answer, call.ticket.waited))
                    continue
                written[call.ready.item.id] = processing.write_answer(
                    session, call.ready.item, answer, decision, settings=settings)
        written |= processing.write_successes(session, succeeded)
    return written


_writers: PerProcess[None, Writer] = PerProcess()


def writer() -> Writer:
    """This process's writer (made anew in a forked child: a thread does not survive one)."""
    return _writers.get(None, Writer)


def drain(timeout: float) -> bool:
    """Let this process's calls end and their answers be written, for up to ``timeout``
    seconds (a worker shutting down); True when none is left out."""
    return all(w.drain(timeout) for w in _writers.take_own())
