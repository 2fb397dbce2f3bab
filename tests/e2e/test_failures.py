"""Every failure class, one test per row, through real workers, Redis and the simulator.

Each test injects one fault with the simulator, lets ``celery worker`` processes meet it,
and checks what the worker did: cooled the fleet down, paused the run, backed off and
failed, opened the breaker, failed fast, or repaired. Every HTTP call must leave an attempt
row, so each test also compares the attempts table with the simulator's own count.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.support.corpus import write_corpus
from tests.support.stack import Stack
from tests.support.waiting import wait_until
from workers.db.models import Attempt, Item, ItemStatus, Result
from workers.db.session import session_scope

pytestmark = pytest.mark.e2e


def attempts_of(stack: Stack, run_id: int) -> list[Attempt]:
    with session_scope(stack.database_url) as s:
        rows = s.scalars(select(Attempt).where(Attempt.run_id == run_id)
                         .order_by(Attempt.started_at)).all()
        s.expunge_all()
        return list(rows)


def items_of(stack: Stack, run_id: int) -> list[Item]:
    with session_scope(stack.database_url) as s:
        rows = s.scalars(select(Item).where(Item.run_id == run_id).order_by(Item.id)).all()
        s.expunge_all()
        return list(rows)


def calls(stack: Stack) -> int:
    return int(stack.simulator.stats()["counters"].get("requests", 0))


def assert_one_attempt_row_per_call(stack: Stack, run_id: int) -> None:
    assert len(attempts_of(stack, run_id)) == calls(stack)


def test_429_cools_the_whole_fleet_down_and_costs_no_attempt(stack: Stack, tmp_path: Path
                                                             ) -> None:
    # Limits on the simulator make it send x-ratelimit-* headers, as the API does, so the
    # fleet learns 300 RPM (one call per 0.2 s) from its one probe's answer. Then every call
    # is answered 429 with retry-after-ms 1000. Pacing alone would let through 5 calls a
    # second, and 16 threads retrying on their own about 16; the shared cooldown lets through
    # one per second.
    write_corpus(tmp_path / "corpus", 20)
    stack.simulator.configure(rpm=300, tpm=10_000_000, rate_limit_rate=1.0,
                              rate_limit_retry_ms=1000)
    stack.settings = {"max_attempts": 2}
    stack.start_workers(2)
    run_id = stack.ingest(tmp_path / "corpus")["run_id"]
    wait_until(lambda: calls(stack) > 0, timeout=30, what="a first call")
    time.sleep(1.5)  # the budget is learned from the first answer; let the cooldowns begin
    start, first = time.monotonic(), calls(stack)
    time.sleep(6)
    made = calls(stack) - first
    elapsed = time.monotonic() - start
    assert made <= elapsed + 3, f"{made} calls in {elapsed:.1f}s of 1s cooldowns"

    limits = stack.cli("limits", "--json")
    (row,) = limits["limits"]
    assert row["key"].endswith(":gpt-4.1-mini") and row["source"] == "headers"
    assert row["rpm"] == 300 and row["cooldown_seconds"] <= 1.0

    stack.simulator.configure(rate_limit_rate=0.0)
    report = stack.wait_for(run_id, timeout=60)
    # Far more 429s than max_attempts, and nothing failed: a 429 is the fleet's, not the item's.
    assert report.succeeded == 20 and report.failed == 0
    assert report.rate_limited == calls(stack) - 20 > 2
    assert_one_attempt_row_per_call(stack, run_id)
    status = stack.cli("status", str(run_id), "--json")
    assert status["attempts_by_outcome"] == {"ok": 20, "rate_limited": report.rate_limited}
    shown = stack.cli("status", str(run_id)).stdout
    assert f"attempts by class: ok 20, rate_limited {report.rate_limited}" in shown
    assert "waited for rate limits:" in shown and f"{calls(stack)} requests" in shown
    assert status["requests_last_minute"] == calls(stack)
    assert status["tokens_last_minute"] == report.input_tokens + report.output_tokens > 0


def test_a_request_the_api_always_rate_limits_fails_after_the_cap(stack: Stack, tmp_path: Path
                                                                  ) -> None:
    write_corpus(tmp_path / "corpus", 1)
    stack.simulator.configure(rate_limit_rate=1.0, rate_limit_retry_ms=10)
    stack.settings = {"max_rate_limited_attempts": 3}
    stack.start_workers(1)
    report = stack.wait_for(stack.ingest(tmp_path / "corpus")["run_id"], timeout=60)
    assert report.errors == {"rate_limited:rate_limit_exceeded": 1}
    (item,) = items_of(stack, report.run_id)
    assert item.last_error_message and item.last_error_message.startswith(
        "still rate limited after 3 attempts")
    assert calls(stack) == 3


def test_quota_outage_pauses_and_resume_pays_for_nothing_twice(stack: Stack, tmp_path: Path
                                                               ) -> None:
    write_corpus(tmp_path / "corpus", 30)
    stack.simulator.configure(quota_after=10)
    stack.start_workers(2)
    run_id = stack.ingest(tmp_path / "corpus")["run_id"]

    paused = stack.wait_for(run_id, status="paused", timeout=60)
    assert paused.status_reason is not None
    assert "insufficient_quota" in paused.status_reason
    assert "billing" in paused.status_reason and f"docpipe resume {run_id}" in paused.status_reason
    time.sleep(1)  # calls in flight when the run paused land now
    refused = stack.simulator.stats()["counters"]["requests"] - 10
    assert 1 <= refused <= 16, "one refusal per busy thread at most, never a retry loop"
    assert paused.failed == 0
    assert stack.cli("status", str(run_id), "--json")["status"] == "paused"

    stack.simulator.configure(quota_after=None)
    assert stack.cli("resume", str(run_id), "--json")["run_id"] == run_id
    final = stack.wait_for(run_id, timeout=60)
    assert final.succeeded == 30 and final.failed == 0
    # Paid for = answered 200 with usage: once per document, before and after the outage.
    paid = stack.simulator.stats()["ok_by_input"]
    assert len(paid) == 30 and set(paid.values()) == {1}
    assert final.attempts_by_outcome == {"ok": 30, "quota": refused}
    assert_one_attempt_row_per_call(stack, run_id)


@pytest.mark.parametrize("status,code", [(403, "credit_balance_exhausted"),
                                         (429, "monthly_spend_limit_exceeded")])
def test_billing_errors_pause_the_run(stack: Stack, tmp_path: Path, status: int, code: str
                                      ) -> None:
    write_corpus(tmp_path / "corpus", 5)
    stack.simulator.configure(force_error={"status": status, "code": code,
                                           "type": "insufficient_quota",
                                           "message": "You have run out of credits."})
    stack.start_workers(1)
    paused = stack.wait_for(stack.ingest(tmp_path / "corpus")["run_id"], status="paused",
                            timeout=60)
    assert paused.status_reason is not None and code in paused.status_reason
    assert paused.failed == 0 and calls(stack) <= 8


@pytest.mark.parametrize("status", [503, 408, 409])
def test_server_errors_back_off_then_fail_with_the_last_error(stack: Stack, tmp_path: Path,
                                                              status: int) -> None:
    write_corpus(tmp_path / "corpus", 4)
    stack.simulator.configure(force_error={"status": status, "type": "server_error",
                                           "message": "The engine is currently overloaded."})
    # The breaker is tested below; here every item must meet the errors itself.
    stack.settings = {"max_attempts": 3, "retry_base_seconds": 0.2, "retry_max_seconds": 1,
                      "breaker_min_calls": 10_000}
    stack.start_workers(1)
    report = stack.wait_for(stack.ingest(tmp_path / "corpus")["run_id"], timeout=60)
    assert report.errors == {f"transient:http_{status}": 4}
    for item in items_of(stack, report.run_id):
        assert item.attempts == 3
        assert item.last_error_message is not None
        assert item.last_error_message.startswith("gave up after 3 attempts")
        assert "overloaded" in item.last_error_message
    attempts = attempts_of(stack, report.run_id)
    assert len(attempts) == 12 and {a.outcome for a in attempts} == {"transient"}
    assert all(a.http_status == status and a.request_id for a in attempts)
    assert_one_attempt_row_per_call(stack, report.run_id)


def test_connection_resets_are_retried_until_they_succeed(stack: Stack, tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus", 30)
    stack.simulator.configure(reset_rate=0.3, seed=3)
    stack.settings = {"max_attempts": 10}
    stack.start_workers(1)
    report = stack.wait_for(stack.ingest(tmp_path / "corpus")["run_id"], timeout=90)
    assert report.succeeded == 30 and report.failed == 0
    resets = stack.simulator.stats()["counters"]["resets"]
    assert resets > 0
    assert report.attempts_by_outcome == {"ok": 30, "transient": resets}
    assert_one_attempt_row_per_call(stack, report.run_id)


def test_timeouts_are_retried_until_they_succeed(stack: Stack, tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus", 20)
    stack.simulator.configure(timeout_rate=0.2, timeout_seconds=30, seed=4)
    stack.settings = {"max_attempts": 10, "request_timeout_seconds": 3,
                      "breaker_min_calls": 10_000}
    stack.start_workers(1)
    report = stack.wait_for(stack.ingest(tmp_path / "corpus")["run_id"], timeout=90)
    assert report.succeeded == 20 and report.failed == 0
    timeouts = stack.simulator.stats()["counters"]["timeouts"]
    attempts = attempts_of(stack, report.run_id)
    assert timeouts > 0
    # Every injected hang timed out (a loaded machine may time out a slow normal call too).
    timed_out = [a for a in attempts if a.error_code == "timeout"]
    assert len(timed_out) >= timeouts
    assert all(a.outcome == "transient" and a.latency_ms >= 3000 for a in timed_out)
    assert_one_attempt_row_per_call(stack, report.run_id)


def test_the_breaker_stops_the_fleet_hammering_a_failing_endpoint(stack: Stack, tmp_path: Path
                                                                  ) -> None:
    write_corpus(tmp_path / "corpus", 40)
    stack.simulator.configure(force_error={"status": 500, "type": "server_error",
                                           "message": "The server had an error."})
    stack.settings = {"max_attempts": 4, "breaker_min_calls": 10, "breaker_open_seconds": 1,
                      "breaker_max_open_seconds": 2}
    stack.start_workers(2)
    run_id = stack.ingest(tmp_path / "corpus")["run_id"]
    time.sleep(8)
    # Without the breaker, 40 items x 4 attempts = 160 calls within a few seconds, and 40
    # failed items. With it: about a window's worth, then one probe per open interval.
    during = calls(stack)
    assert during < 50, during
    report = stack.report(run_id)
    assert report.failed < 10 and report.status == "running"

    stack.simulator.configure(force_error=None)
    final = stack.wait_for(run_id, timeout=90)
    assert final.succeeded + final.failed == 40
    assert final.succeeded >= 30  # items parked by the breaker kept their attempts
    assert_one_attempt_row_per_call(stack, run_id)
    assert stack.cli("limits", "--json")["breaker"] == "closed"


@pytest.mark.parametrize("status,code,error", [
    # A 400 for the document's own input (an image it cannot take); one for the pipeline's
    # own request (its schema, its parameters) pauses the run instead (below).
    (400, "invalid_image_format", "permanent:invalid_image_format"),
    (403, "unsupported_country_region_territory", "permanent:unsupported_country_region_territory"),
    (422, None, "permanent:http_422"),
])
def test_client_errors_fail_fast(stack: Stack, tmp_path: Path, status: int, code: str | None,
                                 error: str) -> None:
    write_corpus(tmp_path / "corpus", 3)
    stack.simulator.configure(force_error={"status": status, "code": code,
                                           "type": "invalid_request_error",
                                           "message": f"simulated {status}"})
    stack.start_workers(1)
    report = stack.wait_for(stack.ingest(tmp_path / "corpus")["run_id"], timeout=60)
    assert report.errors == {error: 3}
    assert report.attempts == 3 == calls(stack)  # no retries
    assert all(i.attempts == 1 for i in items_of(stack, report.run_id))


@pytest.mark.parametrize("force,error_class,fix", [
    ({"status": 401, "code": "invalid_api_key", "type": "invalid_request_error",
      "message": "Incorrect API key provided."}, "auth", "OPENAI_API_KEY"),
    ({"status": 404, "code": "model_not_found", "type": "invalid_request_error",
      "message": "The model `gpt-4.1-mini` does not exist or you do not have access to it."},
     "model_not_found", "model"),
    ({"status": 400, "code": "invalid_json_schema", "type": "invalid_request_error",
      "param": "text.format.schema", "message": "Invalid schema for response_format "
      "'Summary': In context=(), 'oneOf' is not permitted."},
     "request_refused", "fix text.format.schema in pipeline summarise"),
])
def test_auth_and_missing_model_pause_the_run(stack: Stack, tmp_path: Path,
                                              force: dict[str, Any], error_class: str,
                                              fix: str) -> None:
    write_corpus(tmp_path / "corpus", 10)
    stack.simulator.configure(force_error=force)
    stack.start_workers(1)
    run_id = stack.ingest(tmp_path / "corpus")["run_id"]
    paused = stack.wait_for(run_id, status="paused", timeout=60)
    assert paused.status_reason is not None
    assert paused.status_reason.startswith(f"{error_class} ({force['code']})")
    assert fix in paused.status_reason.split("To continue:")[1]
    time.sleep(1)
    assert calls(stack) <= 8 and paused.failed == 0  # every item would fail the same way

    stack.simulator.configure(force_error=None)
    stack.cli("resume", str(run_id), "--json")
    assert stack.wait_for(run_id, timeout=60).succeeded == 10


def test_truncated_output_is_repaired_with_a_larger_budget(stack: Stack, tmp_path: Path) -> None:
    # Any call allowed fewer than 2,000 output tokens is cut off; summarise asks for 1,200,
    # so every first call is truncated and every repair (2,400) completes.
    write_corpus(tmp_path / "corpus", 5)
    stack.simulator.configure(truncate_below_tokens=2000)
    stack.start_workers(1)
    report = stack.wait_for(stack.ingest(tmp_path / "corpus")["run_id"], timeout=60)
    assert report.succeeded == 5 and report.failed == 0
    assert report.attempts_by_outcome == {"ok": 5, "bad_output": 5}
    attempts = attempts_of(stack, report.run_id)
    assert {a.error_code for a in attempts if a.outcome == "bad_output"} == {"truncated"}
    with session_scope(stack.database_url) as s:
        assert s.scalar(select(func.count()).select_from(Result)) == 5
    assert_one_attempt_row_per_call(stack, report.run_id)


def test_a_refusal_gets_one_repair_then_fails_with_its_code(stack: Stack, tmp_path: Path
                                                            ) -> None:
    write_corpus(tmp_path / "corpus", 3)
    stack.simulator.configure(refusal_rate=1.0)
    stack.start_workers(1)
    report = stack.wait_for(stack.ingest(tmp_path / "corpus")["run_id"], timeout=60)
    assert report.errors == {"bad_output:refusal": 3}
    assert report.attempts == 6  # the call and one repair each, then no more
    for item in items_of(stack, report.run_id):
        assert item.status == ItemStatus.FAILED
        assert item.last_error_message and "after one repair attempt" in item.last_error_message
    assert_one_attempt_row_per_call(stack, report.run_id)


def test_long_waits_stay_in_the_database_until_beat_requeues_them(stack: Stack, tmp_path: Path
                                                                  ) -> None:
    # Nothing goes to the broker as a countdown: every retry waits in the items table and
    # beat's reconciler sends it when it is due.
    write_corpus(tmp_path / "corpus", 20)
    stack.simulator.configure(error_rate=0.3, seed=5)
    stack.settings = {"max_countdown_seconds": 0, "reconcile_interval_seconds": 1,
                      "max_attempts": 10, "breaker_min_calls": 10_000}
    stack.start_workers(1, beat=True)
    report = stack.wait_for(stack.ingest(tmp_path / "corpus")["run_id"], timeout=90)
    assert report.succeeded == 20 and report.attempts_by_outcome["transient"] > 0
    assert "docpipe.runs.reconcile" in stack.workers[0].log()
