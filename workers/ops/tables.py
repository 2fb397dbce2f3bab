"""The CLI's tables and summary lines, built from the reports the runtime returns.

Only the CLI prints them (an import-linter contract), so how a run looks on a terminal is
decided here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from workers.llm.pricing import usd

_SUMMARY_KEYS = ("pipeline", "pipeline_version", "documents", "documents_failed", "duplicates",
                 "total", "succeeded", "failed", "reused",
                 "attempts", "rate_limited", "input_tokens", "cached_tokens", "output_tokens")
_PIPELINE_KEYS = ("name", "version", "model", "source", "description")


def pipelines(rows: Iterable[Mapping[str, Any]]) -> Table:
    """The pipelines, one a row."""
    table = Table(*_PIPELINE_KEYS)
    for row in rows:
        table.add_row(*(str(row[k]) for k in _PIPELINE_KEYS))
    return table


_RUN_COLUMNS = ("run", "pipeline", "status", "documents", "succeeded", "failed", "pending",
                "duplicates", "calls", "429s", "tokens in/cached/out", "cost $")


def _figures(r: Mapping[str, Any]) -> dict[str, str]:
    """A run's figures as ``status`` shows them, by name."""
    return {"run": str(r["run_id"]), "pipeline": r["pipeline"], "status": r["status"],
            "cost": f"{r['cost_usd']:.4f}",
            **{key: f"{r[key]:,}" for key in (
                "documents", "documents_succeeded", "documents_failed", "documents_pending",
                "duplicates", "attempts", "rate_limited", "input_tokens", "cached_tokens",
                "output_tokens")}}


def runs(reports: Iterable[Mapping[str, Any]], console: Console) -> RenderableType:
    """``docpipe status``: a run a row, counting documents (a long document's chunks and
    reduces are calls, not documents). Where the table would not fit the terminal, each run
    takes a few lines that wrap between figures, so no number is ever cut."""
    shown = [_figures(r) for r in reports]
    table = Table(*_RUN_COLUMNS)
    for f in shown:
        table.add_row(f["run"], f["pipeline"], f["status"], f["documents"],
                      f["documents_succeeded"], f["documents_failed"], f["documents_pending"],
                      f["duplicates"], f["attempts"], f["rate_limited"],
                      f"{f['input_tokens']}/{f['cached_tokens']}/{f['output_tokens']}",
                      f["cost"])
    unbounded = console.options.update(width=10_000, max_width=10_000)
    if Measurement.get(console, unbounded, table).maximum <= console.width:
        return table
    lines: list[RenderableType] = []
    for f in shown:
        lines += [
            Text.assemble((f"run {f['run']}", "bold"), f"  {f['pipeline']}  {f['status']}"),
            Text(f"  documents {f['documents']}: succeeded {f['documents_succeeded']}, failed "
                 f"{f['documents_failed']}, pending {f['documents_pending']}; duplicates "
                 f"{f['duplicates']}"),
            Text(f"  calls {f['attempts']} (429s {f['rate_limited']}); tokens in "
                 f"{f['input_tokens']}, cached {f['cached_tokens']}, out "
                 f"{f['output_tokens']}; cost ${f['cost']}"),
        ]
    return Group(*lines)


def reasons(reports: Iterable[Mapping[str, Any]]) -> list[str]:
    """Why each paused run is paused, and which runs the simulator answered."""
    lines = []
    for r in reports:
        if r.get("status_reason"):
            lines.append(f"run {r['run_id']}: {r['status_reason']}")
        if r.get("simulated"):
            lines.append(f"run {r['run_id']}: {SIMULATED}")
    return lines


#: What every view of a run the simulator answered says.
SIMULATED = ("simulated: docpipe's simulator answered, not a model; costs are what the same "
             "tokens would cost")


def _money(r: Mapping[str, Any], key: str) -> str:
    return usd(Decimal(str(r[key])))


def _spend(r: Mapping[str, Any]) -> str:
    spend = f"spent {_money(r, 'cost_usd')}, projected {_money(r, 'projected_cost_usd')}"
    if r["budget_usd"] is not None:
        spend += (f", budget {_money(r, 'budget_usd')} ({_money(r, 'in_flight_usd')} held for "
                  "calls in flight)")
    if per := r["cost_per_item"]:
        spend += "; per item " + ", ".join(
            f"{k} {usd(Decimal(str(per[k])))}" for k in ("p50", "p90", "max"))
    return spend


def run_details(r: Mapping[str, Any]) -> list[str]:
    """``docpipe status RUN``: the lines below the table."""
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r["attempts_by_outcome"].items()))
    return [
        f"attempts by class: {outcomes or 'none'}",
        f"waited for rate limits: {r['budget_wait_seconds']:.1f} s, summed over items (they "
        "wait side by side)",
        f"last minute: {r['requests_last_minute']} requests, {r['tokens_last_minute']} tokens",
        f"prompt cache: {r['cache_hit_ratio']:.1%} of input tokens cached",
        _spend(r),
        *(f"failed {error}: {count}" for error, count in sorted(r["errors"].items())),
    ]


def summary(report: Mapping[str, Any]) -> Table:
    """The table ``docpipe run`` and ``demo`` end with."""
    table = Table(show_header=False, title=f"run {report['run_id']} {report['status']}")
    for key in _SUMMARY_KEYS:
        table.add_row(key, str(report[key]))
    table.add_row("cost_usd", f"{report['cost_usd']:.6f}")
    for error, count in report["errors"].items():
        table.add_row(f"error {error}", str(count))
    if report.get("status_reason"):
        table.add_row("paused because", report["status_reason"])
    return table


def limits(snapshot: Any) -> Table:
    """``docpipe limits``: one row a rate-limit key. A budget not configured nor learned yet
    reads ``unknown`` (never 0, which would read as spent); one the API says it does not
    have reads ``none``."""
    table = Table("key", "rpm", "tpm", "source", "learned", "requests left", "tokens left",
                  "cooldown s")
    for row in snapshot.limits:
        learned = "-"
        if row.learned_at:
            learned = f"{row.learned_at} from {row.learned_from or 'an answer'}"
        missing = "none" if row.source == "none" else "unknown"
        table.add_row(row.key, _limit(row.rpm, missing), _limit(row.tpm, missing), row.source,
                      learned, _limit(row.requests_available, missing),
                      _limit(row.tokens_available, missing), str(row.cooldown_seconds))
    return table


def _limit(value: float | None, missing: str) -> str:
    return missing if value is None else f"{value:,}"


def _record_suffix(source: str) -> str:
    return "#" + source.split("#", 1)[1] if "#" in source else ""


def short_output(output: Mapping[str, Any]) -> str:
    """A result in a few lines: lists cut to four entries, values to 160 characters."""
    lines = []
    for key, value in output.items():
        if isinstance(value, list):
            value = ", ".join(v.get("name", str(v)) if isinstance(v, dict) else str(v)
                              for v in value[:4])
        text = str(value)
        lines.append(f"[bold]{key}[/bold]: {text[:160] + ('…' if len(text) > 160 else '')}")
    return "\n".join(lines)


def documents(rows: Iterable[Any], *, title: str) -> Table:
    """``docpipe demo``: each document with its result or its error."""
    table = Table("document", "status", "result", title=title, show_lines=True)
    for row in rows:
        shown = short_output(row.output) if row.output else \
            f"[red]{row.error_code}[/red]: {row.error_message}"
        table.add_row(Path(row.source.split("#")[0]).name + _record_suffix(row.source),
                      row.status, shown)
    return table


#: Failed documents a view names before pointing to the full list.
FAILED_SHOWN = 5


def failures(run_id: int, rows: Iterable[Any], total: int) -> list[str]:
    """The failed documents of a run (the first :data:`FAILED_SHOWN`), each with its code
    and message, then the command that lists them all."""
    if not total:
        return []
    noun = "document" if total == 1 else "documents"
    lines = [f"{total} {noun} failed:"]
    lines += [f"  {row.source}: {row.error_code}: {row.error_message}" for row in rows]
    more = f"and {total - FAILED_SHOWN} more; " if total > FAILED_SHOWN else ""
    lines.append(f"  {more}`docpipe results {run_id} --failed` lists "
                 f"{'them all' if more else 'them'} with their messages")
    return lines


def unreadable(files: Sequence[Mapping[str, str]]) -> list[str]:
    """The sources an estimate could not read (the first :data:`FAILED_SHOWN`), each with its
    code and why, then where the rest are listed."""
    lines = [f"  {f['path']}: {f['code']}: {f['message']}" for f in files[:FAILED_SHOWN]]
    if len(files) > FAILED_SHOWN:
        lines.append(f"  and {len(files) - FAILED_SHOWN} more; "
                     "`docpipe estimate ... --json` lists them all")
    return lines
