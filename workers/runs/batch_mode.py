"""The Batch API: a batch-mode run is sent as JSONL batches and collected by beat.

No worker blocks for the hours a batch may take. Each beat tick:

1. **Submits** the items of batch runs that wait: a document whose result already exists is
   reused and never sent; the rest become ``POST /v1/responses`` lines (``custom_id`` = the
   item) in files of at most ``batch_max_requests`` lines and ``batch_max_bytes`` bytes (the
   API's limits are 50,000 and 200 MB), uploaded with ``purpose=batch``. The batch row and
   its items are written before the upload, so a crash leaves a record, not a lost batch.
2. **Collects** batches that ended: each output line is validated and stored like a live
   answer, with its usage billed at batch prices. What happens to each item is decided by
   :func:`workers.items.decide.decide`, as for a live call: an error line is classified as a
   live error would be; a retry, a repair or a 429's wait goes in a later batch, a failure
   fails the item and the reduces above it, and an error every item would meet (quota, key,
   model) pauses the run. An item with no line at all (the batch was cancelled or failed)
   waits for the next batch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import openai
from openai.types.responses import Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

import pipelines
from workers.db import repository as repo
from workers.db.models import BatchStatus, utcnow
from workers.db.session import session_scope
from workers.errors import (
    ItemError,
    PermanentAPIError,
    TransientError,
)
from workers.items import processing
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
from workers.items.rows import known_of, write_failure
from workers.llm.client import CallResult, answered
from workers.llm.errors import classify_status
from workers.settings import Settings

log = logging.getLogger("docpipe.batches")

#: A batch still ``submitting`` after this long was cut off mid-submit: its items go back.
STALE_SUBMIT = timedelta(minutes=10)
#: The Batch API's completion window: a new batch may take this long.
BATCH_WINDOW = timedelta(hours=24)

Publisher = Callable[..., None]


@dataclass
class TickReport:
    """What one tick did."""

    submitted_batches: int = 0
    submitted_items: int = 0
    reused: int = 0
    collected_batches: int = 0
    succeeded: int = 0
    retried: int = 0
    #: Items a new batch could not bring back before the run's deadline: sent to workers.
    sent_live: int = 0
    failed: int = 0
    #: Lines whose error every item of the run would meet (quota, key, model): run paused.
    paused: int = 0


def tick(settings: Settings, client: openai.OpenAI, publish: Publisher) -> TickReport:
    """Submit what waits, collect what ended; ``publish`` sends items that must go live."""
    report = TickReport()
    submit(settings, client, report)
    collect(settings, client, report, publish)
    return report


def submit(settings: Settings, client: openai.OpenAI, report: TickReport) -> None:
    """Send the waiting items of batch runs as new batches."""
    with session_scope() as session:
        waiting = repo.batchable_items(session, limit=settings.batch_max_requests * 4)
    for run_id, item_ids in waiting.items():
        failed = report.failed
        for start in range(0, len(item_ids), settings.batch_max_requests):
            _submit_group(settings, client, run_id,
                          item_ids[start : start + settings.batch_max_requests], report)
        if report.failed > failed:  # items that could not be sent may have been its last
            with session_scope() as session:
                repo.finish_run_if_done(session, run_id)


def _submit_group(settings: Settings, client: openai.OpenAI, run_id: int,
                  item_ids: list[int], report: TickReport) -> None:
    with session_scope() as session:
        items = repo.items_by_id(session, item_ids)
    lines: dict[int, bytes] = {}
    size = 0
    for item in items.values():
        # The steps of a live item before its call: its request, a stored result to reuse,
        # or the error that refuses it.
        prepared = processing.prepare(item, settings)
        if prepared is None:  # done elsewhere meanwhile: reuse, send nothing
            assert item.stored_result_id is not None
            with session_scope() as session:
                repo.reuse_result(session, item.id, item.stored_result_id)
            report.reused += 1
            processing.hand_up([item])
            continue
        if isinstance(prepared, ItemError):
            with session_scope() as session:
                decision = decide(known_of(session, item, prepared), Policy.of(settings))
                outcome = _apply(session, item, decision, go_live=False)
            setattr(report, outcome, getattr(report, outcome) + 1)
            if outcome == "paused":
                return  # the run is paused: the rest of its items wait with it
            continue
        body = prepared.body
        line = json.dumps({"custom_id": f"item-{item.id}", "method": "POST",
                           "url": "/v1/responses", "body": body},
                          ensure_ascii=False).encode() + b"\n"
        if size + len(line) > settings.batch_max_bytes and lines:
            break  # the rest go in the next batch
        lines[item.id] = line
        size += len(line)
    if not lines:
        return
    with session_scope() as session:
        batch_id, moved = repo.begin_batch(session, run_id, list(lines), input_bytes=size)
        if not moved:  # taken meanwhile: nothing to send, and no batch to keep
            repo.drop_batch(session, batch_id)
            return
    data = b"".join(lines[item_id] for item_id in moved)
    try:
        upload = client.files.create(file=(f"docpipe-run{run_id}-batch{batch_id}.jsonl", data),
                                     purpose="batch")
        created = client.batches.create(
            input_file_id=upload.id, endpoint="/v1/responses", completion_window="24h",
            metadata={"docpipe_run": str(run_id), "docpipe_batch": str(batch_id)})
    except openai.OpenAIError as exc:
        log.warning("batch %s of run %s was not accepted: %s", batch_id, run_id, exc)
        with session_scope() as session:
            repo.batch_submit_failed(session, batch_id, f"{exc.__class__.__name__}: {exc}")
        return
    with session_scope() as session:
        repo.batch_submitted(session, batch_id, provider_batch_id=created.id,
                             input_file_id=upload.id, status=created.status,
                             input_bytes=len(data))
    report.submitted_batches += 1
    report.submitted_items += len(moved)
    log.info("run %s: batch %s (%s) sent with %s items, %s bytes", run_id, batch_id,
             created.id, len(moved), len(data))


def collect(settings: Settings, client: openai.OpenAI, report: TickReport,
            publish: Publisher) -> None:
    """Take in every batch that ended at the provider."""
    with session_scope() as session:
        repo.release_stale_submits(session, utcnow() - STALE_SUBMIT)
        batches = [(b.id, b.run_id, b.provider_batch_id) for b in repo.open_batches(session)]
    for batch_id, run_id, provider_id in batches:
        assert provider_id is not None
        try:
            remote = client.batches.retrieve(provider_id)
        except openai.OpenAIError as exc:
            log.warning("could not poll batch %s (%s): %s", batch_id, provider_id, exc)
            continue
        if remote.status not in BatchStatus.PROVIDER_ENDED:
            with session_scope() as session:
                repo.set_batch_status(session, batch_id, remote.status)
            continue
        with session_scope() as session:
            repo.set_batch_status(session, batch_id, remote.status,
                                  output_file_id=remote.output_file_id,
                                  error_file_id=remote.error_file_id)
        lines = [*_read_lines(client, remote.output_file_id),
                 *_read_lines(client, remote.error_file_id)]
        live = _ingest(settings, batch_id, run_id, lines, report)
        if live:
            with session_scope() as session:
                run = repo.get_run(session, run_id)
                queue = run.queue if run is not None else "docpipe.live"
            publish(live, queue=queue)
        report.collected_batches += 1


Line = tuple[dict[str, Any], Mapping[str, str]]


def _read_lines(client: openai.OpenAI, file_id: str | None) -> list[Line]:
    """A batch file's lines, each with the headers of the answer that brought the file."""
    if not file_id:
        return []
    content = client.files.content(file_id)
    response = getattr(content, "response", None)
    headers: Mapping[str, str] = response.headers if response is not None else {}
    return [(json.loads(line), headers) for line in content.text.splitlines() if line.strip()]


def _ingest(settings: Settings, batch_id: int, run_id: int, lines: list[Line],
            report: TickReport) -> list[int]:
    """Take a batch's lines in; return the items to send live."""
    with session_scope() as session:
        items = repo.batched_items(session, batch_id)
        run = repo.get_run(session, run_id)
        deadline = run.deadline_at if run is not None else None
    # Another 24-hour batch could miss the deadline: what must be sent again goes live.
    go_live = deadline is not None and utcnow() + BATCH_WINDOW > deadline
    live: list[int] = []
    for line, headers in lines:
        try:
            item_id = int(str(line["custom_id"]).removeprefix("item-"))
        except (KeyError, ValueError):
            log.warning("batch %s: a line with an unknown custom_id: %.200s", batch_id, line)
            continue
        item = items.pop(item_id, None)
        if item is None:
            continue  # already taken in (a repeated collect after a crash)
        outcome = _take_line(settings, item, batch_id, line, headers, go_live=go_live)
        if outcome == "sent_live":
            live.append(item.id)
        setattr(report, outcome, getattr(report, outcome) + 1)
    for item in items.values():  # no line: the batch was cancelled or failed before it
        with session_scope() as session:
            if _cancelled(session, run_id):
                repo.fail_item(session, item.id, error_class="cancelled", code="cancelled",
                               message="the run was cancelled before its batch answered")
                report.failed += 1
                continue
            message = "its batch ended without an answer for it"
            if go_live and repo.send_live(session, item.id, error_class="transient",
                                          code="batch_no_answer", message=message):
                live.append(item.id)
                report.sent_live += 1
                continue
            repo.return_to_batching(session, item.id, error_class="transient",
                                    code="batch_no_answer", message=message)
            report.retried += 1
    with session_scope() as session:
        repo.batch_ingested(session, batch_id)
    with session_scope() as session:
        repo.finish_run_if_done(session, run_id)
        repo.finish_cancelled_run(session, run_id)
    return live


def _cancelled(session: Any, run_id: int) -> bool:
    run = repo.get_run(session, run_id)
    return run is not None and run.status_reason == repo.CANCELLED_REASON


def _take_line(settings: Settings, item: repo.ClaimedItem, batch_id: int,
               line: dict[str, Any], headers: Mapping[str, str], *, go_live: bool = False
               ) -> str:
    """Store one line's answer or error through the steps of a live answer; return the
    report field it counts under."""
    pipeline = pipelines.get_pipeline(item.pipeline, settings.pipelines)
    answer = processing.answer_of(item, pipeline, _call_of(item, line, headers), None,
                                  reserve=None,
                                  settings=settings, batch_id=batch_id)
    with session_scope() as session:
        decision = processing.decide_answer(session, item, answer, cooldown=None,
                                            settings=settings)
        if isinstance(decision, Succeed):
            processing.write_successes(session, [(item, answer, 0.0)])
            outcome = "succeeded"
        else:
            repo.record_attempt(session, answer.attempt)
            outcome = _apply(session, item, decision, go_live=go_live)
    if outcome == "succeeded":
        processing.hand_up([item])  # the next tick sends a reduce it completed
    return outcome


def _call_of(item: repo.ClaimedItem, line: dict[str, Any], headers: Mapping[str, str]
             ) -> CallResult:
    """A batch output line as the live client reports a call: its response's output text
    and usage, or its error classified as the live path classifies an HTTP error."""
    response = line.get("response") or {}
    status = response.get("status_code")
    body = response.get("body") or {}
    request_id = response.get("request_id")
    parsed = _parse_response(body) if status == 200 else None
    if parsed is not None:
        return answered(parsed, model=item.model, started_at=utcnow(), latency_ms=0,
                        http_status=200, request_id=request_id, headers=headers)
    return CallResult(
        model=item.model, started_at=utcnow(), latency_ms=0, headers=headers,
        http_status=status if isinstance(status, int) else None, request_id=request_id,
        error=_line_error(line, status, body, request_id) if status != 200 else
        PermanentAPIError(f"the batch answered with a response docpipe cannot read: "
                          f"{json.dumps(body)[:300]}", code="unreadable_response"))


def _line_error(line: dict[str, Any], status: Any, body: dict[str, Any],
                request_id: str | None) -> ItemError:
    if line.get("error"):
        code = str(line["error"].get("code") or "batch_error")
        return TransientError(str(line["error"].get("message") or code), code=code)
    detail = body.get("error") or {}
    return classify_status(
        int(status) if isinstance(status, int) else 500,
        code=detail.get("code") or None, kind=detail.get("type") or None,
        message=str(detail.get("message") or f"HTTP {status}"),
        param=detail.get("param") or None, request_id=request_id)


def _apply(session: Session, item: repo.ClaimedItem, decision: Decision, *, go_live: bool
           ) -> str:
    """Write a batch item's decision other than success; return the report field it counts."""
    match decision:
        case Repair(error) | RetryAfter(_, error) | ParkUntil(_, error):
            # Another try goes in the next batch, or live if a batch could miss the deadline.
            if go_live:
                repo.send_live(session, item.id, error_class=error.error_class,
                               code=error.code, message=clip(error.message))
                return "sent_live"
            repo.return_to_batching(session, item.id, error_class=error.error_class,
                                    code=error.code, message=clip(error.message))
            return "retried"
        case PauseRun(error, reason):
            repo.return_to_batching(session, item.id, error_class=error.error_class,
                                    code=error.code, message=clip(error.message))
            repo.pause_run(session, item.run_id, reason)
            log.error("run %s paused: %s", item.run_id, reason)
            return "paused"
        case FailWith():
            write_failure(session, item, decision)
            return "failed"
    raise AssertionError(f"a success is written with its result, not as {decision}")


def _parse_response(body: dict[str, Any]) -> Response | None:
    """A batch line's Response; a field value newer than this SDK is dropped, not fatal."""
    try:
        return Response.model_validate(body)
    except ValidationError as exc:
        bad = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
        optional = bad & {"service_tier", "reasoning", "text", "tools", "tool_choice",
                          "truncation", "prompt_cache_retention", "safety_identifier"}
        if not optional or optional != bad:
            log.warning("an unreadable batch line: %s", exc)
            return None
        try:
            return Response.model_validate({k: v for k, v in body.items() if k not in bad})
        except ValidationError:
            return None
