"""The whole path on real services: ingest, Celery workers, the simulator, SQL, replay."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select

from pipelines import get_pipeline
from tests.support.corpus import input_keys, write_corpus
from tests.support.stack import Stack
from tests.support.waiting import wait_until
from workers.db.models import Attempt, Item, ItemStatus, Result
from workers.db.session import session_scope
from workers.simulator import input_key

pytestmark = pytest.mark.e2e







def test_200_documents_two_workers_with_5xx_and_429s(stack: Stack, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, 200)
    (corpus / "empty.txt").write_bytes(b"")
    (corpus / "junk.txt").write_bytes(bytes(range(256)) * 8)
    (corpus / "image.bmp").write_bytes(b"BM" + b"\0" * 64)
    stack.simulator.configure(error_rate=0.05, rate_limit_rate=0.05, latency_ms=20, seed=7)
    stack.start_workers(2)

    ingested = stack.ingest(corpus, pipeline="extract")
    assert ingested == {"run_id": ingested["run_id"], "items": 200, "duplicates": 0,
                        "unreadable": 3, "long_documents": 0}
    run_id = ingested["run_id"]
    report = stack.wait_for(run_id, timeout=180)

    sim = stack.simulator.stats()["counters"]
    with session_scope(stack.database_url) as s:
        items = s.execute(select(Item).where(Item.run_id == run_id)).scalars().all()
        attempts = s.execute(select(Attempt).where(Attempt.run_id == run_id)).scalars().all()
        results = s.scalar(select(func.count()).select_from(Result)
                           .where(Result.pipeline_version == report.pipeline_version))

    # Every document ends with exactly one result or a failed item with a reason.
    assert len(items) == 203
    assert {i.status for i in items} <= set(ItemStatus.TERMINAL)
    succeeded = [i for i in items if i.status == ItemStatus.SUCCEEDED]
    failed = [i for i in items if i.status == ItemStatus.FAILED]
    assert all(i.result_id is not None for i in succeeded)
    assert all(i.last_error_code and i.last_error_message for i in failed)
    assert results == len(succeeded) == 200
    assert sorted(i.last_error_code or "" for i in failed) == [
        "binary_content", "empty_file", "unsupported_type"]

    # Every HTTP call has an attempt row, failed ones included.
    assert len(attempts) == sim["requests"]
    assert sum(a.outcome == "rate_limited" for a in attempts) == sim["rate_limited"] > 0
    server_errors = sum(v for k, v in sim.items() if k.startswith("status_5"))
    assert sum(a.outcome == "transient" for a in attempts) == server_errors > 0
    assert all(a.request_id for a in attempts)
    ok = [a for a in attempts if a.outcome == "ok"]
    assert len(ok) == 200 and all(a.input_tokens > 0 and a.output_tokens > 0 for a in ok)

    # status --json totals match the rows.
    status = stack.cli("status", str(run_id), "--json")
    assert status["total"] == 203 and status["succeeded"] == 200 and status["failed"] == 3
    assert status["pending"] == 0
    assert status["attempts"] == len(attempts)
    assert status["rate_limited"] == sim["rate_limited"]
    assert status["input_tokens"] == sum(a.input_tokens for a in attempts)
    assert status["cached_tokens"] == sum(a.cached_tokens for a in attempts)
    assert status["output_tokens"] == sum(a.output_tokens for a in attempts)
    assert Decimal(str(status["cost_usd"])) == pytest.approx(
        sum((a.cost_usd for a in attempts), Decimal(0)))
    assert status["cost_usd"] > 0

    # results --format jsonl: one object per item, outputs and errors.
    lines = [json.loads(line) for line in
             stack.cli("results", str(run_id), "--format", "jsonl").stdout.splitlines()]
    assert len(lines) == 203
    assert sum("output" in line for line in lines) == 200
    bad = [line for line in lines if "error" in line]
    assert {line["error"]["code"] for line in bad} == {"binary_content", "empty_file",
                                                       "unsupported_type"}
    assert all(line["output"]["document_type"] for line in lines if "output" in line)


def test_replay_after_a_stopped_simulator_pays_nothing_twice(stack: Stack, tmp_path: Path
                                                             ) -> None:
    write_corpus(tmp_path / "corpus", 40)
    stack.simulator.configure(latency_ms=150, latency_sigma=0.1)
    # The breaker would park the items while the endpoint is down (tested on its own); this
    # test needs them to fail so that it can replay them.
    stack.settings = {"worker_concurrency": 2, "max_attempts": 3, "breaker_min_calls": 10_000}
    stack.start_workers(1)
    run_id = stack.ingest(tmp_path / "corpus")["run_id"]

    wait_until(lambda: stack.report(run_id).succeeded >= 8, timeout=60, what="8 successes")
    stack.simulator.stop()
    report = stack.wait_for(run_id, timeout=120)
    assert report.failed > 0 and report.succeeded >= 8
    assert set(report.errors) == {"transient:connection_error"}

    with session_scope(stack.database_url) as s:
        done = list(s.scalars(select(Item.id).where(Item.run_id == run_id,
                                                    Item.status == ItemStatus.SUCCEEDED)))
        calls_before = s.scalar(select(func.count()).select_from(Attempt)
                                .where(Attempt.item_id.in_(done)))
    done_keys = set(input_keys(stack, done, "summarise").values())

    stack.simulator.start()
    replayed = stack.cli("replay", str(run_id), "--json")
    assert replayed == {"run_id": run_id, "replayed": report.failed, "skipped": {}}
    final = stack.wait_for(run_id, timeout=120)
    assert final.succeeded == 40 and final.failed == 0

    called = set(stack.simulator.stats()["calls_by_input"])
    assert called.isdisjoint(done_keys)
    assert len(called) == report.failed
    with session_scope(stack.database_url) as s:
        assert s.scalar(select(func.count()).select_from(Attempt)
                        .where(Attempt.item_id.in_(done))) == calls_before


def test_the_same_document_twice_makes_one_result(sqlite_stack: Stack, tmp_path: Path) -> None:
    stack = sqlite_stack
    folder = tmp_path / "docs"
    folder.mkdir()
    text = "Globex Corporation renewed its license with Initech Ltd on 4 April 2025."
    (folder / "a.txt").write_text(text)
    (folder / "copy-of-a.md").write_text(text + "\n\n")
    (folder / "other.txt").write_text("An unrelated memo about the canteen menu for May.")
    stack.start_workers(1)

    first = stack.ingest(folder)
    assert (first["items"], first["duplicates"]) == (2, 1)
    stack.wait_for(first["run_id"])
    second = stack.ingest(folder / "a.txt")
    report = stack.wait_for(second["run_id"])
    assert report.succeeded == 1 and report.reused == 1 and report.attempts == 0

    with session_scope(stack.database_url) as s:
        assert s.scalar(select(func.count()).select_from(Result)) == 2
    key = input_key(get_pipeline("summarise").request(text))
    assert stack.simulator.stats()["calls_by_input"][key] == 1


def test_quota_exhaustion_pauses_the_run_until_resumed(stack: Stack, tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus", 6)
    stack.simulator.configure(quota_exhausted=True)
    stack.start_workers(1)
    run_id = stack.ingest(tmp_path / "corpus")["run_id"]

    paused = stack.wait_for(run_id, status="paused", timeout=60)
    assert paused.status_reason and "insufficient_quota" in paused.status_reason
    assert "docpipe resume" in paused.status_reason
    quota_calls = stack.simulator.stats()["counters"]["requests"]
    assert quota_calls <= 8  # paused at once, not retried in a loop
    assert paused.failed == 0

    stack.simulator.configure(quota_exhausted=False)
    assert stack.cli("resume", str(run_id), "--json")["run_id"] == run_id
    final = stack.wait_for(run_id, timeout=60)
    assert final.succeeded == 6 and final.failed == 0


def test_refusals_and_truncated_output_fail_with_their_own_codes(stack: Stack, tmp_path: Path
                                                                 ) -> None:
    write_corpus(tmp_path / "a", 3)
    stack.start_workers(1)
    stack.simulator.configure(refusal_rate=1.0)
    refused = stack.wait_for(stack.ingest(tmp_path / "a")["run_id"])
    assert refused.errors == {"bad_output:refusal": 3}
    stack.simulator.configure(refusal_rate=0.0, truncate_rate=1.0)
    truncated = stack.wait_for(stack.ingest(tmp_path / "a", pipeline="extract")["run_id"])
    assert truncated.errors == {"bad_output:truncated": 3}
    assert truncated.attempts == 6  # one repair each, then no retry loop on bad output
    assert truncated.output_tokens > 0  # truncated calls still cost tokens


def test_task_messages_carry_only_the_item_id(stack: Stack, tmp_path: Path) -> None:
    secret_text = "The vault code is 7781-ALPHA and must stay in the database."
    (tmp_path / "s.txt").write_text(secret_text)
    report = stack.ingest(tmp_path / "s.txt")  # no worker running: the message waits
    client = redis.Redis.from_url(stack.broker_url)
    raw = client.lrange("docpipe.live", 0, -1)
    assert len(raw) == 1
    envelope = json.loads(raw[0])
    assert envelope["content-type"] == "application/json"
    args, kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
    with session_scope(stack.database_url) as s:
        item_id = s.scalar(select(Item.id).where(Item.run_id == report["run_id"]))
    assert args == [item_id] and kwargs == {}
    assert "7781-ALPHA" not in raw[0].decode() and "sk-e2e-secret-key" not in raw[0].decode()
