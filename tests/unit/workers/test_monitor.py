"""The live view's arithmetic: throughput and ETA over a window, the recent 429 share."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from rich.console import Console

from workers.db.repository import RunReport
from workers.ops import monitor


def report(done: int, *, total: int = 100, attempts: int = 0, limited: int = 0,
           status: str = "running") -> RunReport:
    return RunReport(
        run_id=3, pipeline="summarise", pipeline_version="v", model="m", status=status,
        status_reason=None, created_at=datetime.now(UTC), finished_at=None, total=total,
        by_status={"succeeded": done, "queued": total - done}, reused=0, attempts=attempts,
        rate_limited=limited, input_tokens=1000, cached_tokens=250, output_tokens=300,
        reasoning_tokens=0, cost_usd=Decimal("0.5"), errors={"server_error:http_500": 2},
        projected_cost_usd=Decimal("1.25"),
        documents_by_status={"succeeded": done // 2, "failed": 1, "queued": 7}, duplicates=3)


def test_rates_over_the_window() -> None:
    window = monitor.Window(seconds=10)
    assert window.add(report(0), at=0.0) == monitor.Rates(None, None, None)
    rates = window.add(report(20, attempts=40, limited=4), at=5.0)
    assert rates.per_second == 4.0 and rates.eta_seconds == 80 / 4.0
    assert rates.recent_429_share == 0.1
    # Old samples leave the window (the oldest kept is the last one at least 10 s back): the
    # rate follows the recent pace, 20 items in the 15 s since t=5.
    window.add(report(30, attempts=50, limited=4), at=15.0)
    rates = window.add(report(40, attempts=60, limited=4), at=20.0)
    assert rates.per_second == 20 / 15 and rates.recent_429_share == 0.0


def test_stalled_run_has_no_eta() -> None:
    window = monitor.Window()
    window.add(report(10), at=0.0)
    rates = window.add(report(10), at=3.0)
    assert rates.per_second == 0.0 and rates.eta_seconds is None and \
        rates.recent_429_share is None


def test_render_shows_what_the_issue_asks() -> None:
    console = Console(width=120, record=True)
    console.print(monitor.render(report(40, attempts=60, limited=6),
                                 monitor.Rates(2.5, 24.0, 0.05)))
    text = console.export_text()
    for expected in ("run 3", "40/100", "2.5 items/s", "eta 0:24", "$0.5000 so far",
                     "$1.2500 projected", "6 of 60 calls (10.0%, 5.0% in the last 30s)",
                     "server_error:http_500 2", "cached 250",
                     "documents   28: succeeded 20  failed 1  pending 7  duplicates 3"):
        assert expected in text, expected
