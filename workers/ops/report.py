"""``docpipe report RUN``: one self-contained HTML page about a run.

Plots are drawn with matplotlib into inline SVG (text as paths), so the page needs no script,
font or file beside it and opens the same on a laptop or attached to a ticket.
"""

from __future__ import annotations

import io
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from mako.template import Template  # type: ignore[import-untyped]
from matplotlib.figure import Figure

import pipelines
from workers.db import repository as repo
from workers.db.session import session_scope
from workers.errors import RunNotFound
from workers.llm.pricing import usd
from workers.settings import Settings

TEMPLATE = Path(__file__).with_name("report.html.mako")
#: Rows in the slowest and most expensive tables.
TOP = 10
FAILED_LISTED = 50
COLORS = {"ok": "#2f7ed8", "input": "#2f7ed8", "cached": "#8bbc21", "output": "#f28f43",
          "cost": "#910000", "error": "#c42525"}


@dataclass
class _ItemTotals:
    source: str
    calls: int = 0
    latency_ms: int = 0
    cost: Decimal = Decimal(0)
    tokens: int = 0


@dataclass
class RunData:
    """What the report plots, gathered in one pass over the run's attempts."""

    report: repo.RunReport
    started: list[float] = field(default_factory=list)  # seconds after the run began
    latency_s: list[float] = field(default_factory=list)
    ok: list[bool] = field(default_factory=list)
    input_tokens: list[int] = field(default_factory=list)
    cached_tokens: list[int] = field(default_factory=list)
    output_tokens: list[int] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    finished: list[float] = field(default_factory=list)
    items: dict[int, _ItemTotals] = field(default_factory=dict)
    #: The first failed documents (the report lists them; ``results --failed`` has all).
    failed: list[repo.FailedDocument] = field(default_factory=list)


def gather(run_id: int) -> RunData:
    """Read the run and every attempt of it (streamed) into :class:`RunData`.

    Raises:
        RunNotFound: there is no such run.
    """
    with session_scope() as session:
        report = repo.run_report(session, run_id)
        if report is None:
            raise RunNotFound(run_id)
        data = RunData(report)
        origin = report.created_at
        per_item: dict[int, _ItemTotals] = defaultdict(lambda: _ItemTotals(""))
        for call in repo.iter_run_calls(session, run_id):
            data.started.append(_seconds(call.started_at, origin))
            data.latency_s.append(call.latency_ms / 1000)
            data.ok.append(call.outcome == "ok")
            data.input_tokens.append(call.input_tokens)
            data.cached_tokens.append(call.cached_tokens)
            data.output_tokens.append(call.output_tokens)
            data.cost.append(float(call.cost_usd))
            data.outcomes[call.outcome] += 1
            totals = per_item[call.item_id]
            totals.source = call.source
            totals.calls += 1
            totals.latency_ms += call.latency_ms
            totals.cost += Decimal(str(call.cost_usd))
            totals.tokens += call.input_tokens + call.output_tokens
        data.items = dict(per_item)
        data.finished = [_seconds(at, origin) for at in repo.run_finish_times(session, run_id)]
        data.failed = repo.failed_documents(session, run_id, limit=FAILED_LISTED)
    return data


def _seconds(at: datetime, origin: datetime) -> float:
    return max(0.0, (at - origin).total_seconds())


def _svg(fig: Figure) -> str:
    buffer = io.StringIO()
    # No metadata block: it only names matplotlib and the date, with links to RDF schemas.
    fig.savefig(buffer, format="svg", bbox_inches="tight",
                metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: inline in HTML


def _figure() -> tuple[Figure, Any]:
    # A bare Figure, not pyplot: no global state, no display backend.
    fig = Figure(figsize=(7.5, 3.0), dpi=100)
    ax = fig.subplots()
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def _bucket_seconds(span: float) -> float:
    """A bucket width that gives a readable number of bars for a run of ``span`` seconds."""
    for width in (1, 5, 10, 30, 60, 300, 600, 1800, 3600):
        if span / width <= 120:
            return float(width)
    return 7200.0


def _buckets(times: list[float], weights: list[float] | None, width: float
             ) -> tuple[list[float], list[float]]:
    sums: dict[int, float] = defaultdict(float)
    for index, at in enumerate(times):
        sums[int(at // width)] += 1.0 if weights is None else weights[index]
    if not sums:
        return [], []
    last = max(sums)
    return [i * width for i in range(last + 1)], [sums.get(i, 0.0) for i in range(last + 1)]


def _unit(width: float) -> tuple[str, float]:
    return ("minute", 60.0) if width >= 60 else ("second", 1.0)


def plot_throughput(data: RunData) -> str:
    """Documents finished per second (or minute) over the run."""
    fig, ax = _figure()
    span = max(data.finished, default=0.0)
    width = _bucket_seconds(span)
    name, per = _unit(width)
    x, counts = _buckets(data.finished, None, width)
    ax.bar(x, [c * per / width for c in counts], width=width * 0.9, align="edge",
           color=COLORS["ok"])
    ax.set_xlabel("seconds since the run was created")
    ax.set_ylabel(f"documents / {name}")
    ax.set_title("Throughput")
    return _svg(fig)


def plot_latency(data: RunData) -> str:
    """Distribution of call latency, answered calls and errors apart."""
    fig, ax = _figure()
    ok = [lat for lat, good in zip(data.latency_s, data.ok, strict=True) if good]
    bad = [lat for lat, good in zip(data.latency_s, data.ok, strict=True) if not good]
    top = max(data.latency_s, default=1.0) or 1.0
    bins = [top * i / 40 for i in range(41)]
    ax.hist([ok, bad], bins=bins, stacked=True, color=[COLORS["ok"], COLORS["error"]],
            label=["answered", "error"])
    for share, style in ((0.5, "--"), (0.95, ":"), (0.99, "-.")):
        if data.latency_s:
            value = _quantile(sorted(data.latency_s), share)
            ax.axvline(value, color="black", linestyle=style, linewidth=1,
                       label=f"p{int(share * 100)} {value:.2f}s")
    ax.set_xlabel("seconds")
    ax.set_ylabel("calls")
    ax.set_title("Call latency")
    ax.legend(frameon=False, fontsize=8)
    return _svg(fig)


def plot_tokens_cost(data: RunData) -> str:
    """Tokens per bucket (input, cached, output) and cumulative dollars over the run."""
    fig, ax = _figure()
    span = max(data.started, default=0.0)
    width = _bucket_seconds(span)
    x, inputs = _buckets(data.started, [float(v) for v in data.input_tokens], width)
    _, cached = _buckets(data.started, [float(v) for v in data.cached_tokens], width)
    _, outputs = _buckets(data.started, [float(v) for v in data.output_tokens], width)
    uncached = [i - c for i, c in zip(inputs, cached, strict=True)]
    ax.bar(x, cached, width=width * 0.9, align="edge", color=COLORS["cached"],
           label="input, cached")
    ax.bar(x, uncached, width=width * 0.9, align="edge", bottom=cached, color=COLORS["input"],
           label="input, uncached")
    ax.bar(x, outputs, width=width * 0.9, align="edge", bottom=inputs, color=COLORS["output"],
           label="output")
    ax.set_xlabel("seconds since the run was created")
    ax.set_ylabel(f"tokens / {width:.0f}s")
    ax.set_title("Tokens and cost")
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    spend = ax.twinx()
    running = 0.0
    cumulative = []
    for value in data.cost:
        running += value
        cumulative.append(running)
    spend.plot(data.started, cumulative, color=COLORS["cost"], linewidth=1.5)
    spend.set_ylabel("dollars spent", color=COLORS["cost"])
    spend.spines[["top"]].set_visible(False)
    return _svg(fig)


def plot_errors(data: RunData) -> str:
    """Calls by error class, and failed documents by class and code."""
    fig, ax = _figure()
    calls = sorted(((k, v) for k, v in data.outcomes.items() if k != "ok"),
                   key=lambda kv: -kv[1])
    failed = sorted(data.report.errors.items(), key=lambda kv: -kv[1])
    labels = [f"call: {k}" for k, _ in calls] + [f"failed: {k}" for k, _ in failed]
    values = [v for _, v in calls] + [v for _, v in failed]
    if not labels:
        labels, values = ["no errors"], [0]
    ax.barh(labels[::-1], values[::-1], color=COLORS["error"])
    ax.set_xlabel("count")
    ax.set_title("Errors by class")
    return _svg(fig)


def _quantile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, int(share * len(ordered) + 0.5) - 1))]


def _configuration(data: RunData, settings: Settings) -> dict[str, Any]:
    r = data.report
    config: dict[str, Any] = {
        "pipeline": r.pipeline, "pipeline version": r.pipeline_version, "model": r.model,
        "mode": r.mode, "schedule": r.schedule or "–",
        "budget": usd(r.budget_usd) if r.budget_usd is not None else "none",
        "created": r.created_at.isoformat(timespec="seconds"),
        "finished": r.finished_at.isoformat(timespec="seconds") if r.finished_at else "–",
        "status": r.status + (f" ({r.status_reason})" if r.status_reason else ""),
        "max attempts": settings.max_attempts,
    }
    limits = settings.model_limits.get(r.model)
    config["model limits"] = (f"{limits.rpm:,} requests and {limits.tpm:,} tokens a minute"
                              if limits else "none configured")
    try:
        pipeline = pipelines.get_pipeline(r.pipeline, settings.pipelines)
    except pipelines.PipelineError:
        return config
    if pipeline.version == r.pipeline_version:
        config["request"] = json.dumps(pipeline.request("{document text}"), indent=2)
    return config


def _summary(data: RunData) -> list[tuple[str, str]]:
    r = data.report
    elapsed = (r.finished_at - r.created_at).total_seconds() if r.finished_at \
        else max(data.finished, default=0.0)
    latencies = sorted(data.latency_s)
    rows = [
        ("documents", f"{r.total} ({r.succeeded} succeeded, {r.failed} failed, "
                      f"{r.reused} reused)"),
        ("wall time", f"{elapsed:.1f} s"),
        ("throughput", f"{r.succeeded / elapsed:.2f} documents/s" if elapsed else "–"),
        ("calls", f"{r.attempts} ({r.rate_limited} answered 429)"),
        ("latency p50 / p95 / p99",
         " / ".join(f"{_quantile(latencies, q):.2f} s" for q in (0.5, 0.95, 0.99))
         if latencies else "–"),
        ("tokens", f"{r.input_tokens:,} in ({r.cached_tokens:,} cached, "
                   f"{r.cache_hit_ratio:.1%}), {r.output_tokens:,} out, "
                   f"{r.reasoning_tokens:,} reasoning"),
        ("cost", usd(r.cost_usd)),
    ]
    if r.cost_per_item:
        rows.append(("cost per document p50 / p90 / max", " / ".join(
            usd(Decimal(str(r.cost_per_item[k]))) for k in ("p50", "p90", "max"))))
    return rows


def _top(data: RunData, key: str) -> list[dict[str, Any]]:
    ranked = sorted(data.items.items(),
                    key=lambda kv: kv[1].latency_ms if key == "latency" else kv[1].cost,
                    reverse=True)[:TOP]
    return [{"item": item_id, "source": t.source, "calls": t.calls,
             "latency": f"{t.latency_ms / 1000:.2f} s", "cost": usd(t.cost),
             "tokens": f"{t.tokens:,}"} for item_id, t in ranked]


def render(data: RunData, settings: Settings) -> str:
    """The report as one HTML string."""
    template = Template(TEMPLATE.read_text("utf-8"), default_filters=["h"])
    html: str = template.render(
        report=data.report, summary=_summary(data), config=_configuration(data, settings),
        plots=[plot_throughput(data), plot_latency(data), plot_tokens_cost(data),
               plot_errors(data)],
        slowest=_top(data, "latency"), costliest=_top(data, "cost"), failed=data.failed,
        generated=datetime.now().astimezone().isoformat(timespec="seconds"))
    return html
