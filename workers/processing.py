"""Processing one item: claim it, reuse or compute its result, record every call, decide.

This is the body of the Celery task, kept free of Celery so the decision logic reads (and
tests) on its own. The task only re-publishes the item when the outcome asks for a retry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import pipelines
from pipelines import OutputError, PipelineNotFound
from workers.db import repository as repo
from workers.db.models import utcnow
from workers.db.session import session_scope
from workers.errors import (
    BadOutputError,
    ItemError,
    ItemFailedError,
    PauseRunError,
    RetryableError,
)
from workers.llm.client import CallResult, ResponsesClient
from workers.pricing import cost_usd
from workers.retry import retry_delay
from workers.settings import Settings

log = logging.getLogger("docpipe.items")

#: Longest error message stored on an item or attempt.
MAX_MESSAGE = 2000


@dataclass(frozen=True)
class Outcome:
    """What happened to an item in one delivery, and when to try again if at all."""

    status: str  # skipped | reused | succeeded | retry | failed | paused
    retry_in: float | None = None


def process_item(item_id: int, *, settings: Settings, client: ResponsesClient) -> Outcome:
    """Process one item. Safe to call for the same id any number of times, concurrently."""
    with session_scope() as session:
        item = repo.claim_item(session, item_id, lease_seconds=settings.lease_seconds)
    if item is None:
        # Done, held by another worker, not yet due, or its run is paused: nothing to do.
        return Outcome("skipped")

    try:
        pipeline = pipelines.get_pipeline(item.pipeline)
    except PipelineNotFound as exc:
        return _fail(item, ItemFailedError(exc.message, code=exc.code))
    if pipeline.version != item.pipeline_version:
        return _fail(item, ItemFailedError(
            f"pipeline {pipeline.name} is now version {pipeline.version}, the run was created "
            f"with {item.pipeline_version}: start a new run", code="pipeline_changed"))

    with session_scope() as session:
        existing = repo.find_result_id(
            session, item.content_hash, item.pipeline_version, item.chunk_index
        )
        if existing is not None:
            repo.reuse_result(session, item.id, existing)
    if existing is not None:
        _finish_run_if_done(item.run_id)
        return Outcome("reused")

    call = client.create(pipeline.request(item.text))
    error = call.error
    output = None
    if error is None:
        try:
            output = pipeline.validate_output(call.output_text or "")
        except OutputError as exc:
            error = BadOutputError(exc.message, code=exc.code, http_status=call.http_status,
                                   request_id=call.request_id, usage=call.usage)
    attempt = _attempt_record(item, call, error)

    if error is None:
        assert output is not None
        with session_scope() as session:
            repo.record_attempt(session, attempt)
            repo.save_result(session, item, output=output, model=call.model,
                             response_id=call.response_id)
        _finish_run_if_done(item.run_id)
        log.info("item succeeded", extra={"item_id": item.id, "run_id": item.run_id,
                                          "request_id": call.request_id})
        return Outcome("succeeded")

    error.item_id = item.id
    log.warning("item call failed: %s %s", error.error_class, error.code,
                extra={"item_id": item.id, "run_id": item.run_id,
                       "request_id": error.request_id, "attempt": item.attempts})
    if isinstance(error, RetryableError) and item.attempts < settings.max_attempts:
        delay = retry_delay(item.attempts, base=settings.retry_base_seconds,
                            cap=settings.retry_max_seconds, retry_after=error.retry_after)
        with session_scope() as session:
            repo.record_attempt(session, attempt)
            repo.schedule_retry(session, item.id, not_before=utcnow() + timedelta(seconds=delay),
                                error_class=error.error_class, code=error.code,
                                message=_clip(error.message))
        return Outcome("retry", retry_in=delay)
    if isinstance(error, PauseRunError):
        reason = f"{error.error_class} ({error.code}): {_clip(error.message, 500)}"
        if error.hint:
            reason += f" To continue: {error.hint}."
        with session_scope() as session:
            repo.record_attempt(session, attempt)
            repo.release_item(session, item.id, error_class=error.error_class, code=error.code,
                              message=_clip(error.message))
            repo.pause_run(session, item.run_id, reason)
        log.error("run %s paused: %s", item.run_id, reason)
        return Outcome("paused")
    if isinstance(error, RetryableError):
        error.message = f"gave up after {item.attempts} attempts: {error.message}"
    return _fail(item, error, attempt)


def _fail(item: repo.ClaimedItem, error: ItemError,
          attempt: repo.AttemptRecord | None = None) -> Outcome:
    with session_scope() as session:
        if attempt is not None:
            repo.record_attempt(session, attempt)
        repo.fail_item(session, item.id, error_class=error.error_class, code=error.code,
                       message=_clip(error.message))
    _finish_run_if_done(item.run_id)
    return Outcome("failed")


def _finish_run_if_done(run_id: int) -> None:
    # In its own transaction, after the item's commit: of items finishing concurrently, the
    # last to commit then sees all the others terminal. Checked inside the item's own
    # transaction, each would still see the others open and the run would never finish.
    with session_scope() as session:
        repo.finish_run_if_done(session, run_id)


def _attempt_record(item: repo.ClaimedItem, call: CallResult,
                    error: ItemError | None) -> repo.AttemptRecord:
    usage = call.usage
    return repo.AttemptRecord(
        item_id=item.id, run_id=item.run_id, model=call.model,
        outcome="ok" if error is None else error.error_class,
        started_at=call.started_at, latency_ms=call.latency_ms, http_status=call.http_status,
        error_code=error.code if error else None,
        error_message=_clip(error.message) if error else None,
        request_id=call.request_id, response_id=call.response_id,
        input_tokens=usage.input_tokens, cached_tokens=usage.cached_tokens,
        output_tokens=usage.output_tokens, reasoning_tokens=usage.reasoning_tokens,
        cost_usd=cost_usd(call.model, usage),
    )


def _clip(text: str, limit: int = MAX_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
