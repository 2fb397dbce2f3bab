"""The steps of one item, from its claim to its written answer.

The group processor (:mod:`workers.items.group`), the one flow every live item takes (a
suspect as a group of one), takes each of its items through these steps: :func:`prepare`
(its request, or the error that refuses it first), the answer of its call
(:func:`answer_of`), the decision core's verdict and its write (:func:`decide_answer`,
:func:`write_answer`, :func:`write_successes`), and the release after an error in docpipe's
own services (:func:`release_after`). No Celery here: the task
(:mod:`workers.runtime.tasks`) sends what the outcomes ask for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

from sqlalchemy.orm import Session

import pipelines
from pipelines import OutputError, Pipeline, PipelineDefinitionError, PipelineNotFound
from pipelines.errors import DocumentError
from workers.admission.throttle import Park, Ticket, TooLarge
from workers.db import repository as repo
from workers.db.models import AttemptOutcome, RunMode, utcnow
from workers.db.session import session_scope
from workers.errors import (
    BadOutputError,
    BudgetExhaustedError,
    InfrastructureError,
    ItemError,
    ItemFailedError,
    PermanentAPIError,
    PipelineBrokenError,
    PipelineUnknownError,
    QuarantinedError,
    Usage,
)
from workers.items.decide import (
    Decision,
    FailWith,
    ParkUntil,
    PauseRun,
    Policy,
    Repair,
    RetryAfter,
    Succeed,
    clip,
    decide,
)
from workers.items.requests import request_body
from workers.items.rows import fail_ancestors, known_of, write_failure
from workers.llm.client import CallResult
from workers.llm.pricing import Tier, price_table, usd
from workers.ops import logs, metrics
from workers.process import holding
from workers.settings import Settings

log = logging.getLogger("docpipe.items")

@dataclass(frozen=True)
class Outcome:
    """What happened to an item in one delivery, and when to try again if at all."""

    status: str  # skipped | reused | succeeded | retry | waiting | failed | paused
    #: Send a message with this countdown. None: no message; a longer wait stays in the
    #: database until the reconciler sends the item.
    retry_in: float | None = None
    #: Other items to send now: a reduce whose last part this item was.
    send: tuple[int, ...] = ()
    #: The error code of an item that failed: a detail for the task's report, not part of
    #: what the outcome is.
    code: str | None = field(default=None, compare=False)


def countdown_for(settings: Settings, seconds: float) -> float | None:
    """The countdown to send for a wait of ``seconds``, or None to leave it to the reconciler.

    Redis holds a countdown message unacked in a worker's memory, so only short waits go
    to the broker.
    """
    return seconds if seconds <= settings.max_countdown_seconds else None




def item_context(item: repo.ClaimedItem, **more: Any) -> contextlib.AbstractContextManager[None]:
    """The log context of everything done for ``item``: its run, id and attempt."""
    return logs.bind(run_id=item.run_id, item_id=item.id, attempt=item.attempts, **more)


def release_after(item: repo.ClaimedItem, exc: Exception, *, settings: Settings) -> Outcome:
    """Release a claimed item after ``exc``, an error in docpipe's own services, as decided.

    Its call, if one was in flight, is recorded as cut short. Raises ``exc`` again when even
    the release cannot be written (the caller keeps the item until it can be:
    :func:`write_release`).
    """
    log.warning("item %s released after an error in docpipe's services: %s: %s", item.id,
                type(exc).__name__, exc, exc_info=True,
                extra={"item_id": item.id, "run_id": item.run_id})
    try:
        return write_release(item, exc, settings=settings)
    except Exception as error:
        log.error("could not release item %s (%s); it is held until the release is written",
                  item.id, type(error).__name__)
        raise exc from None


def write_release(item: repo.ClaimedItem, exc: Exception, *, settings: Settings) -> Outcome:
    """The release of :func:`release_after`, written in one transaction; raises what the
    database raised when it cannot be."""
    error = InfrastructureError(f"{type(exc).__name__}: {exc}", code=type(exc).__name__)
    error.item_id = item.id
    with session_scope() as session:
        if repo.taken_over(session, [item.id], holder=holding.token()):
            # Found dead meanwhile: the item and its calls are another worker's now.
            return Outcome("skipped")
        decision = decide(known_of(session, item, error), Policy.of(settings))
        give_up = isinstance(decision, FailWith)
        # A call cut short by the error is paid for, perhaps, but has no answer.
        repo.close_lost_attempts(session, item.id, code=error.code,
                                 message=clip(f"the call was cut short: {exc}"))
        released = repo.release_after_error(
            session, item.id, error_class=error.error_class, code=error.code,
            message=decision.message if isinstance(decision, FailWith)
            else clip(error.message),
            retry_at=utcnow() + timedelta(seconds=decision.seconds)
            if isinstance(decision, RetryAfter) else None)
        if released and isinstance(decision, FailWith) and decision.ancestors:
            fail_ancestors(session, item, decision)
    if give_up and released:
        finish_run_if_done(item.run_id)
        return Outcome("failed", code=error.code)
    return Outcome("retry" if released else "skipped")


@dataclass(frozen=True)
class Ready:
    """An item whose request is built: the next step is its admission."""

    item: repo.ClaimedItem
    pipeline: Pipeline
    body: dict[str, Any]


def prepare(item: repo.ClaimedItem, settings: Settings) -> Ready | ItemError | None:
    """What stands before an item's call: its request, or the error that refuses it before
    any call, or None when a stored result can be reused (the caller writes the reuse)."""
    if item.worker_losses >= settings.max_worker_losses:
        with session_scope() as session:
            lost = repo.last_lost_attempt(session, item.id)
        return QuarantinedError(
            f"quarantined: its worker was lost {item.worker_losses} times while processing it "
            "(killed, out of memory or past its time limit); the document may be poison"
            + (f". Last lost call: {lost[1]}" if lost else ""),
            code="memory_limit" if lost and lost[0] == "memory_limit" else "worker_lost")
    try:
        pipeline = pipelines.get_pipeline(item.pipeline, settings.pipelines)
    except PipelineNotFound as exc:  # the workers' DOCPIPE_PIPELINES is not the CLI's
        return PipelineUnknownError(f"the workers have {exc.message}", code=exc.code)
    except PipelineDefinitionError as exc:
        return PipelineBrokenError(exc.message, code=exc.code)
    if pipeline.version != item.pipeline_version:
        return ItemFailedError(
            f"pipeline {pipeline.name} is now version {pipeline.version}, the run was created "
            f"with {item.pipeline_version}: start a new run", code="pipeline_changed")
    if item.stored_result_id is not None:
        return None
    try:
        body = request_body(item, pipeline, settings)
    except DocumentError as exc:  # a scan the pipeline does not send, or cannot render
        return ItemFailedError(exc.message, code=exc.code)
    return Ready(item, pipeline, body)


def too_large(admission: TooLarge) -> PermanentAPIError:
    """The error of a request the per-minute token limit can never admit."""
    return PermanentAPIError(
        f"the request needs about {admission.estimate} tokens, above the limit of "
        f"{admission.tpm} tokens per minute", code="request_too_large")


def write_park(session: Session, item: repo.ClaimedItem, park: Park, *,
               settings: Settings) -> Outcome:
    """Park an item the throttle did not admit (no attempt spent)."""
    metrics.record_parked(park.reason)
    countdown = countdown_for(settings, park.seconds)
    repo.park_item(session, item.id,
                   waited_ms=int(park.seconds * 1000) if park.reason == "budget" else 0,
                   not_before=utcnow() + timedelta(seconds=park.seconds),
                   message_sent=countdown is not None)
    return Outcome("waiting", retry_in=countdown)


def reserve_for(ready: Ready, ticket: Ticket, settings: Settings) -> Decimal | None:
    """What a call of a run with a budget holds before it is sent: its worst case."""
    if ready.item.budget_usd is None:
        return None
    # The worst case: every estimated input token uncached, and the longest answer.
    max_output = int(ready.body["max_output_tokens"])
    return price_table(settings).cost(str(ready.body["model"]), Usage(
        input_tokens=max(0, ticket.estimate - max_output), output_tokens=max_output),
        tier=tier_of(ready.item))


@dataclass(frozen=True)
class Answer:
    """A finished call, checked: its error (None: a valid output) and its attempt row."""

    call: CallResult
    error: ItemError | None
    output: dict[str, Any] | None
    attempt: repo.AttemptRecord


def answer_of(item: repo.ClaimedItem, pipeline: Pipeline, call: CallResult,
              attempt_id: int | None, *, reserve: Decimal | None, settings: Settings,
              batch_id: int | None = None) -> Answer:
    """Check a finished call's output against the pipeline, and count the call: made live
    (its ``in_flight`` row ``attempt_id``), or a line of batch ``batch_id`` (a new row, at
    batch prices)."""
    error = call.error
    output = None
    if error is None:
        try:
            output = pipeline.validate_output(call.output_text or "")
        except OutputError as exc:
            error = BadOutputError(exc.message, code=exc.code, http_status=call.http_status,
                                   request_id=call.request_id, usage=call.usage)
    tier = Tier.BATCH if batch_id is not None else tier_of(item)
    attempt = attempt_record(item, call, error, attempt_id, settings=settings,
                             reserved=reserve or Decimal(0), tier=tier,
                             worker=worker_name() if batch_id is None else f"batch:{batch_id}")
    metrics.record_call(attempt, tier=tier)
    if error is not None:
        error.item_id = item.id
        log.warning("item call failed: %s %s", error.error_class, error.code,
                    extra={"item_id": item.id, "run_id": item.run_id,
                           "request_id": error.request_id, "attempt": item.attempts})
    return Answer(call, error, output, attempt)


def decide_answer(session: Session, item: repo.ClaimedItem, answer: Answer, *,
                  cooldown: float | None, settings: Settings) -> Decision:
    """The decision core's answer about an answered call, from the facts in ``session``."""
    repairing = item.last_error_class == BadOutputError.error_class
    return decide(known_of(session, item, answer.error, repairing=repairing,
                           cooldown=cooldown), Policy.of(settings))


def write_answer(session: Session, item: repo.ClaimedItem, answer: Answer, decision: Decision,
                 *, settings: Settings) -> Outcome:
    """Write ``decision`` about an answered call that did not succeed, with its attempt.

    Successes go through :func:`write_successes`, together.
    """
    assert not isinstance(decision, Succeed)
    repo.record_attempt(session, answer.attempt)
    return write_decision(session, item, decision, settings=settings)


def taken_over(session: Session, answered: list[tuple[Ready, Answer]]) -> set[int]:
    """The answered items this process no longer holds, their calls recorded: first in the
    transaction that writes answers. A process stopped past its heartbeat and continued finds
    its items voided or taken by another worker; what it paid for is kept as an attempt, and
    nothing else is written (no result, no status)."""
    lost = repo.taken_over(session, [ready.item.id for ready, _ in answered],
                           holder=holding.token())
    for ready, answer in answered:
        if ready.item.id in lost:
            repo.record_attempt(session, answer.attempt)
            with item_context(ready.item, request_id=answer.call.request_id):
                log.warning("item %s was taken over while its call ran (this process was "
                            "found dead): its answer is kept as an attempt only",
                            ready.item.id)
    return lost


def write_successes(session: Session,
                    answered: list[tuple[repo.ClaimedItem, Answer, float]]
                    ) -> dict[int, Outcome]:
    """Write answers whose decision is success (each ``(item, answer, waited)``): their
    attempts, results and items in a few statements. Each is ``Outcome("succeeded")``: its
    parent and the run's end are the caller's, after the commit."""
    successes = []
    for item, answer, waited in answered:
        assert answer.output is not None  # a success has a valid output
        successes.append(repo.Success(item, answer.attempt, answer.output,
                                      answer.call.response_id, waited_ms=int(waited * 1000)))
    repo.record_successes(session, successes)
    for item, answer, _ in answered:
        with item_context(item, request_id=answer.call.request_id):
            log.info("item succeeded")
    return {item.id: Outcome("succeeded") for item, _, _ in answered}


def write_decision(session: Session, item: repo.ClaimedItem, decision: Decision, *,
           settings: Settings) -> Outcome:
    """Write a decision other than success, in the transaction that recorded the attempt."""
    match decision:
        case Repair(error):
            # Ask again (with room to finish, if it was cut off); a second bad answer fails
            # the item.
            repo.schedule_retry(session, item.id, not_before=utcnow(),
                                error_class=error.error_class, code=error.code,
                                message=clip(error.message), message_sent=True)
            return Outcome("retry", retry_in=0.0)
        case ParkUntil(seconds):
            countdown = countdown_for(settings, seconds)
            repo.park_item(session, item.id, not_before=utcnow() + timedelta(seconds=seconds),
                           message_sent=countdown is not None)
            return Outcome("retry", retry_in=countdown)
        case RetryAfter(seconds, error):
            countdown = countdown_for(settings, seconds)
            repo.schedule_retry(session, item.id,
                                not_before=utcnow() + timedelta(seconds=seconds),
                                error_class=error.error_class, code=error.code,
                                message=clip(error.message), message_sent=countdown is not None)
            return Outcome("retry", retry_in=countdown)
        case PauseRun(error, reason):
            repo.release_item(session, item.id, error_class=error.error_class,
                              code=error.code, message=clip(error.message))
            repo.pause_run(session, item.run_id, reason)
            log.error("run %s paused: %s", item.run_id, reason)
            return Outcome("paused")
        case FailWith():
            write_failure(session, item, decision)
            return Outcome("failed", code=decision.code)
    raise AssertionError(f"a success is written with its result, not as {decision}")


def over_budget(item: repo.ClaimedItem, reserve: Decimal) -> BudgetExhaustedError:
    with session_scope() as session:
        run = repo.get_run(session, item.run_id)
        assert run is not None
        spent, held = run.spent_usd, run.reserved_usd
    assert item.budget_usd is not None
    return BudgetExhaustedError(
        f"the budget of {usd(item.budget_usd)} is reached: {usd(spent)} spent and "
        f"{usd(held)} held for calls in flight, and the next call may cost up to "
        f"{usd(reserve)}.", code="budget_exhausted")


def hand_up(done: list[repo.ClaimedItem]) -> dict[int, int]:
    """After the results' commit: unblock each reduce whose last part one of ``done`` was.
    Returns the parent id to send, by the id of the part that completed it (the live path
    sends it; the Batch API's next tick takes it)."""
    children = [item for item in done if item.parent_id is not None]
    if not children:
        return {}
    ready: dict[int, int] = {}
    with session_scope() as session:
        for item in children:
            assert item.parent_id is not None
            if repo.unblock_parent(session, item.parent_id):
                ready[item.id] = item.parent_id
    return ready


def finish_run_if_done(run_id: int) -> None:
    # In its own transaction, after the item's commit: of items finishing concurrently, the
    # last to commit then sees all the others terminal. Checked inside the item's own
    # transaction, each would still see the others open and the run would never finish.
    with session_scope() as session:
        repo.finish_run_if_done(session, run_id)


def worker_name() -> str:
    return _named(os.getpid())


@lru_cache(maxsize=1)
def _named(pid: int) -> str:
    # Keyed by pid: a forked pool process names itself anew.
    return f"{socket.gethostname()}:{pid}"


def attempt_record(item: repo.ClaimedItem, call: CallResult, error: ItemError | None,
                   attempt_id: int | None, *, settings: Settings, reserved: Decimal,
                   tier: Tier, worker: str) -> repo.AttemptRecord:
    usage = call.usage
    return repo.AttemptRecord(
        id=attempt_id, item_id=item.id, run_id=item.run_id, model=call.model,
        worker=worker, reserved_usd=reserved,
        outcome=AttemptOutcome.OK if error is None else error.error_class,
        started_at=call.started_at, latency_ms=call.latency_ms, http_status=call.http_status,
        error_code=error.code if error else None,
        error_message=clip(error.message) if error else None,
        request_id=call.request_id, response_id=call.response_id,
        input_tokens=usage.input_tokens, cached_tokens=usage.cached_tokens,
        output_tokens=usage.output_tokens, reasoning_tokens=usage.reasoning_tokens,
        cost_usd=price_table(settings).cost(call.model, usage, tier=tier),
        simulated=call.simulated,
    )


def tier_of(item: repo.ClaimedItem) -> Tier:
    return Tier.FLEX if item.mode == RunMode.FLEX else Tier.DEFAULT
