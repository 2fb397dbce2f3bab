"""The batch submitter against the simulator: files split by lines and bytes, reuse first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
from sqlalchemy import select

from pipelines import SUMMARISE
from tests.support.corpus import write_corpus
from tests.support.services import SimulatorProcess
from workers.db.models import Batch, Item, ItemStatus
from workers.db.session import session_scope
from workers.runs import batch_mode as batches
from workers.runs.ingest import ingest
from workers.settings import get_settings


def hold(ids: list[int], *, queue: str) -> None:
    raise AssertionError("a batch run's items are never published to a queue")


def test_files_are_split_by_lines_and_by_bytes(migrated_db: str, configure: Any,
                                               simulator: SimulatorProcess,
                                               tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus", 9)
    configure(batch_max_requests=4, batch_max_bytes=7_000)
    settings = get_settings()
    report = ingest([str(tmp_path / "corpus")], SUMMARISE, settings=settings, publish=hold,
                    queue="docpipe.nightly", mode="batch")
    client = openai.OpenAI(api_key="sk-test", base_url=simulator.base_url)
    tick = batches.TickReport()
    for _ in range(5):  # each call sends what fits; the rest waits for the next
        batches.submit(settings, client, tick)
    assert tick.submitted_items == report.items == 9
    with session_scope() as s:
        sent = s.scalars(select(Batch).order_by(Batch.id)).all()
        assert all(i.status == ItemStatus.BATCHED for i in s.scalars(select(Item)))
    assert all(b.items <= 4 and b.input_bytes <= 7_000 for b in sent)
    assert sum(b.items for b in sent) == 9 and len(sent) >= 3
    for batch in sent:
        assert batch.input_file_id is not None
        content = client.files.content(batch.input_file_id).content
        assert len(content) == batch.input_bytes
        assert content.count(b"\n") == batch.items


def test_a_line_with_a_newer_enum_value_is_still_read() -> None:
    body = {"id": "resp_1", "object": "response", "created_at": 1, "model": "gpt-4.1-mini",
            "output": [], "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "status": "completed", "service_tier": "hyperspeed"}
    parsed = batches._parse_response(body)
    assert parsed is not None and parsed.id == "resp_1"
    assert batches._parse_response({"id": "x"}) is None


def test_a_tick_never_runs_beside_another(migrated_db: str, configure: Any,
                                          broker_url: str) -> None:
    import redis

    configure(broker_url=broker_url, openai_api_key="sk-test")
    from workers.runtime import tasks

    held = redis.Redis.from_url(broker_url).lock("docpipe:batches:tick", timeout=30)
    assert held.acquire(blocking=False)
    try:
        assert tasks.batch_tick() == {}, "the running tick holds the lock: this one skips"
    finally:
        held.release()
    assert tasks.batch_tick() == {"submitted_batches": 0, "submitted_items": 0, "reused": 0,
                                  "collected_batches": 0, "succeeded": 0, "retried": 0,
                                  "sent_live": 0, "failed": 0, "paused": 0}


CLAUSE = ("Clause {n}.{k}: the supplier Northwind Traders Inc shall deliver {k} pallets to "
          "Contoso Systems Ltd in Leeds by {day} March 2025, at $1{n:03d}.00 a pallet.")


def _long_document(path: Path, pages: int = 80) -> Path:
    path.write_text("\n\n".join(
        f"# Page {n}\n\n" + "\n\n".join(CLAUSE.format(n=n, k=k, day=1 + n % 28)
                                        for k in range(14)) for n in range(pages)))
    return path


def _ingest_long_batch_run(tmp_path: Path) -> int:
    report = ingest([str(_long_document(tmp_path / "contract.md"))], SUMMARISE,
                    settings=get_settings(), publish=hold, queue="docpipe.nightly",
                    mode="batch")
    with session_scope() as s:
        statuses = [i.status for i in s.scalars(select(Item).where(
            Item.run_id == report.run_id))]
    assert statuses.count(ItemStatus.BLOCKED) >= 1, "a long document has reduces above it"
    return report.run_id


def test_a_part_refused_at_submit_fails_its_reduces_and_ends_the_run(
        migrated_db: str, configure: Any, tmp_path: Path) -> None:
    """A part that cannot be sent fails the reduces above it: the run cannot hang `running`."""
    from workers.db.models import Run, RunStatus

    run_id = _ingest_long_batch_run(tmp_path)
    with session_scope() as s:  # the pipeline changed since the run was created
        s.get_one(Run, run_id).pipeline_version = "0ld"
    tick = batches.TickReport()
    batches.submit(get_settings(), openai.OpenAI(api_key="sk-test", base_url="http://0.0.0.0:9"),
                   tick)
    with session_scope() as s:
        items = list(s.scalars(select(Item).where(Item.run_id == run_id)))
        run = s.get_one(Run, run_id)
        assert all(i.status == ItemStatus.FAILED for i in items), \
            [(i.level, i.status) for i in items]
        parts = [i for i in items if i.level == 0]
        reduces = [i for i in items if i.level > 0]
        assert {i.last_error_code for i in parts} == {"pipeline_changed"}
        assert {(i.last_error_class, i.last_error_code) for i in reduces} == \
            {("part_failed", "pipeline_changed")}
        assert run.status == RunStatus.FINISHED
    assert tick.failed == len(parts) and tick.submitted_items == 0


def _one_item_in_a_batch(settings: Any, simulator: SimulatorProcess, tmp_path: Path
                         ) -> tuple[Any, Item, int, batches.TickReport]:
    """A batch-mode run of one document, submitted: its report, item, batch id and tick."""
    write_corpus(tmp_path / "corpus", 1)
    report = ingest([str(tmp_path / "corpus")], SUMMARISE, settings=settings, publish=hold,
                    queue="docpipe.nightly", mode="batch")
    tick = batches.TickReport()
    batches.submit(settings, openai.OpenAI(api_key="sk-test", base_url=simulator.base_url), tick)
    with session_scope() as s:
        item = s.scalars(select(Item).where(Item.run_id == report.run_id)).one()
        batch_id = item.batch_id
    assert batch_id is not None
    return report, item, batch_id, tick


def test_a_429_line_is_rate_limited_as_live_and_waits_for_the_next_batch(
        migrated_db: str, configure: Any, simulator: SimulatorProcess, tmp_path: Path) -> None:
    """A 429 in a batch line means what it means live: rate limited, never the item's fault."""
    from workers.db.models import Attempt

    settings = get_settings()
    report, item, batch_id, tick = _one_item_in_a_batch(settings, simulator, tmp_path)
    line = {"custom_id": f"item-{item.id}", "response": {
        "status_code": 429, "request_id": "req_1",
        "body": {"error": {"message": "Rate limit reached", "type": "requests",
                           "code": "rate_limit_exceeded"}}}}
    batches._ingest(settings, batch_id, report.run_id, [(line, {})], tick)
    with session_scope() as s:
        item = s.get_one(Item, item.id)
        attempt = s.scalars(select(Attempt).where(Attempt.item_id == item.id)).one()
        assert (item.status, item.last_error_class) == (ItemStatus.PENDING, "rate_limited")
        assert (attempt.outcome, attempt.error_code) == ("rate_limited", "rate_limit_exceeded")
    assert (tick.retried, tick.failed) == (1, 0)


def test_a_truncated_answer_in_a_batch_line_gets_its_repair_in_the_next_batch(
        migrated_db: str, configure: Any, simulator: SimulatorProcess, tmp_path: Path) -> None:
    """A line whose response stopped at max_output_tokens is bad output, as it is live: read
    the same way, not a crash of the collector."""
    from workers.db.models import Attempt

    settings = get_settings()
    report, item, batch_id, tick = _one_item_in_a_batch(settings, simulator, tmp_path)
    body = {"id": "resp_1", "object": "response", "created_at": 1, "model": "gpt-4.1-mini",
            "output": [], "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
            "usage": {"input_tokens": 10, "output_tokens": 1200, "total_tokens": 1210,
                      "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}}}
    line = {"custom_id": f"item-{item.id}",
            "response": {"status_code": 200, "request_id": "req_1", "body": body}}
    batches._ingest(settings, batch_id, report.run_id, [(line, {})], tick)
    with session_scope() as s:
        item = s.get_one(Item, item.id)
        attempt = s.scalars(select(Attempt).where(Attempt.item_id == item.id)).one()
        assert (item.status, item.last_error_code) == (ItemStatus.PENDING, "truncated")
        assert (attempt.outcome, attempt.output_tokens) == ("bad_output", 1200)
        assert attempt.response_id == "resp_1" and attempt.worker == f"batch:{batch_id}"
    assert (tick.retried, tick.failed) == (1, 0)
