"""The fleet's rate limit on real workers: a budget nobody configured, learned from headers.

The simulator sends ``x-ratelimit-*`` headers as the API does and, like the API, may enforce
its per-minute limits over shorter periods (here 5 s of budget at once), so calls sent
faster than the budget allows are refused at once instead of hiding in a minute's burst.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support.corpus import write_corpus
from tests.support.stack import Stack
from workers.db.models import Attempt
from workers.db.session import session_scope

pytestmark = pytest.mark.e2e

RPM = 1200  # 20 calls a second
DOCS = 300


def test_a_budget_learned_from_headers_holds_on_the_engine(stack: Stack, tmp_path: Path
                                                           ) -> None:
    # Two workers whose engines could send every call of the run at once (2 x 256 slots),
    # and no DOCPIPE_MODEL_LIMITS: the fleet knows nothing of the budget until an answer.
    write_corpus(tmp_path / "corpus", DOCS)
    stack.simulator.configure(rpm=RPM, tpm=50_000_000, limit_window_seconds=5,
                              latency_ms=300, latency_sigma=0.2)
    stack.settings = {"worker_concurrency": 256, "max_inline_wait_seconds": 30,
                      "request_timeout_seconds": 20}
    stack.start_workers(2)
    report = stack.wait_for(stack.ingest(tmp_path / "corpus")["run_id"], timeout=120)
    assert report.succeeded == DOCS and report.failed == 0

    requests = int(stack.simulator.stats()["counters"]["requests"])
    refused = requests - DOCS
    assert refused <= 0.01 * requests, f"{refused} of {requests} calls refused"
    with session_scope(stack.database_url) as s:
        calls = sorted(s.execute(select(Attempt.started_at, Attempt.latency_ms)
                                 .where(Attempt.run_id == report.run_id)).all())
    starts = [started for started, _ in calls]
    # One probe, and nothing else until its answer came back...
    probe_answered = starts[0] + timedelta(milliseconds=calls[0][1])
    assert starts[1] >= probe_answered, "a second call went before the probe's headers"
    # ...then the learned budget's pace: never above it (beyond its one-second burst), and
    # at least 90% of it.
    rate = RPM / 60
    paced = (starts[-1] - starts[1]).total_seconds()
    assert len(starts) - 1 <= rate * paced + rate + 1
    pace = (len(starts) - 1 - rate) / paced
    assert pace >= 0.9 * rate, f"{pace:.1f} calls/s against a budget of {rate:.0f}"

    (row,) = stack.cli("limits", "--json")["limits"]
    assert row["source"] == "headers" and row["rpm"] == RPM
    assert row["learned_at"] is not None and row["learned_from"].startswith("req_")
