"""The live view of a run: ``status --watch``, ``run`` and ``ingest --wait`` all show it.

It polls the database (``repository.run_report``) and derives what a person watching wants:
throughput over the last half minute, an ETA from it, spend so far and projected, errors by
class, and the share of calls answered 429 recently.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from workers.db import repository as repo
from workers.db.session import session_scope
from workers.errors import RunNotFound
from workers.llm.pricing import usd

#: Throughput and the 429 rate are measured over this many seconds.
WINDOW_SECONDS = 30.0
DONE_STATUSES = ("finished", "paused")


@dataclass(frozen=True)
class Sample:
    at: float
    done: int
    attempts: int
    rate_limited: int


@dataclass(frozen=True)
class Rates:
    """What the window says: items a second, seconds left, share of recent calls 429'd."""

    per_second: float | None
    eta_seconds: float | None
    recent_429_share: float | None


class Window:
    """Recent samples of a run's counters, to turn totals into rates."""

    def __init__(self, seconds: float = WINDOW_SECONDS) -> None:
        self.seconds = seconds
        self._samples: deque[Sample] = deque()

    def add(self, report: repo.RunReport, at: float) -> Rates:
        """Record ``report`` as seen at ``at`` (monotonic seconds); return the rates."""
        sample = Sample(at, report.succeeded + report.failed, report.attempts,
                        report.rate_limited)
        self._samples.append(sample)
        while len(self._samples) > 2 and at - self._samples[1].at >= self.seconds:
            self._samples.popleft()
        first = self._samples[0]
        elapsed = at - first.at
        if report.finished_at is not None:
            # Over: the whole run's pace says more than the last few samples.
            took = (report.finished_at - report.created_at).total_seconds()
            return Rates(sample.done / took if took > 0 else None, 0.0, None)
        if elapsed <= 0:
            return Rates(None, None, None)
        per_second = (sample.done - first.done) / elapsed
        calls = sample.attempts - first.attempts
        share = (sample.rate_limited - first.rate_limited) / calls if calls else None
        eta = report.pending / per_second if per_second > 0 else None
        return Rates(per_second, eta, share)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else \
        f"{rest // 60}:{rest % 60:02d}"


def render(report: repo.RunReport, rates: Rates, waiting: str | None = None
           ) -> RenderableType:
    """The live view of one run; ``waiting`` says why it waits, if it knows."""
    done = report.succeeded + report.failed
    title = Text.assemble((f"run {report.run_id} ", "bold"), f"{report.pipeline} ",
                          (report.status, "green" if report.status == "finished" else
                           "yellow" if report.status == "paused" else "cyan"),
                          f"  {report.mode}")
    bar = Table.grid(padding=(0, 1))
    bar.add_row(ProgressBar(total=max(report.total, 1), completed=done, width=40),
                f"{done}/{report.total}",
                f"{done / report.total:.0%}" if report.total else "")
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim")
    facts.add_column()
    rate = "–" if rates.per_second is None else f"{rates.per_second:.1f} items/s"
    facts.add_row("throughput", f"{rate}   eta {_duration(rates.eta_seconds)}")
    facts.add_row("documents", f"{report.documents}: succeeded {report.documents_succeeded}  "
                  f"failed {report.documents_failed}  pending {report.documents_pending}  "
                  f"duplicates {report.duplicates}")
    facts.add_row("items", f"succeeded {report.succeeded}  failed {report.failed}  "
                  f"pending {report.pending}  reused {report.reused} (a long document's "
                  "chunks and reduces are items)")
    facts.add_row("cost", f"{usd(report.cost_usd)} so far, "
                  f"{usd(report.projected_cost_usd)} projected"
                  + (f", budget {usd(report.budget_usd)}" if report.budget_usd is not None
                     else ""))
    share = report.rate_limited / report.attempts if report.attempts else 0.0
    recent = "" if rates.recent_429_share is None else \
        f", {rates.recent_429_share:.1%} in the last {WINDOW_SECONDS:.0f}s"
    facts.add_row("429s", f"{report.rate_limited} of {report.attempts} calls ({share:.1%}"
                  f"{recent})")
    facts.add_row("tokens", f"in {report.input_tokens:,} (cached {report.cached_tokens:,})  "
                  f"out {report.output_tokens:,}")
    classes = sorted(report.errors.items(), key=lambda kv: -kv[1])
    facts.add_row("errors", ", ".join(f"{name} {count}" for name, count in classes[:6])
                  or "none")
    parts: list[RenderableType] = [title, bar, facts]
    if report.status_reason:
        parts.append(Text(report.status_reason, style="yellow"))
    if waiting:
        parts.append(Text(f"waiting: {waiting}", style="yellow"))
    return Group(*parts)


def watch(run_id: int, *, console: Console, interval: float = 1.0,
          on_tick: Callable[[repo.RunReport], None] | None = None,
          waiting: Callable[[repo.RunReport], str | None] | None = None) -> repo.RunReport:
    """Show the live view until the run finishes or pauses; return its last report.

    ``on_tick`` runs after each poll: the caller's chance to reconcile or check its workers.
    ``waiting`` says why the run waits, if anything is missing (see ``workers.ops.waiting``).
    Raises RunNotFound if the run does not exist.
    """
    window = Window()
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while True:
            with session_scope() as session:
                report = repo.run_report(session, run_id)
            if report is None:
                raise RunNotFound(run_id)
            note = waiting(report) if waiting is not None else None
            live.update(render(report, window.add(report, time.monotonic()), note),
                        refresh=True)
            if report.status in DONE_STATUSES:
                return report
            if on_tick is not None:
                on_tick(report)
            time.sleep(interval)
