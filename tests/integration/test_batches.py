"""The batch submitter against the simulator: files split by lines and bytes, reuse first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
from sqlalchemy import select

from pipelines import SUMMARISE
from tests.e2e.test_pipeline import write_corpus
from tests.support.services import SimulatorProcess
from workers import batches
from workers.db.models import Batch, Item, ItemStatus
from workers.db.session import session_scope
from workers.ingest import ingest
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
    from workers import tasks

    held = redis.Redis.from_url(broker_url).lock("docpipe:batches:tick", timeout=30)
    assert held.acquire(blocking=False)
    try:
        assert tasks.batch_tick() == {}, "the running tick holds the lock: this one skips"
    finally:
        held.release()
    assert tasks.batch_tick() == {"submitted_batches": 0, "submitted_items": 0, "reused": 0,
                                  "collected_batches": 0, "succeeded": 0, "retried": 0,
                                  "sent_live": 0, "failed": 0}
