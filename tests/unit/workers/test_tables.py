"""What the CLI's tables and lines say: budgets never read as spent when they are unknown,
and failed documents are named with where the rest are."""

from __future__ import annotations

from rich.console import Console

from workers.admission.throttle import LimitState, ThrottleState
from workers.db.repository import FailedDocument
from workers.ops import tables


def rendered(table: object) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def state(key: str, source: str, **values: object) -> LimitState:
    defaults: dict[str, object] = {"rpm": None, "tpm": None, "requests_available": None,
                                   "tokens_available": None, "cooldown_seconds": 0.0}
    return LimitState(key=key, source=source, **(defaults | values))  # type: ignore[arg-type]


def test_limits_say_unknown_for_what_is_not_learned_and_none_for_no_limit() -> None:
    snapshot = ThrottleState("api.openai.com", [
        state("api:gpt-unknown", "unknown"),
        state("api:gpt-free", "none"),
        state("api:gpt-4.1-mini", "headers", rpm=500, tpm=200_000, requests_available=0.0,
              tokens_available=150_000),
    ], "closed", 0.0)
    lines = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
             for line in rendered(tables.limits(snapshot)).splitlines()
             if line.startswith("│")}
    assert lines["api:gpt-unknown"][:2] == ["unknown", "unknown"]
    assert lines["api:gpt-unknown"][4:6] == ["unknown", "unknown"]
    assert lines["api:gpt-free"][4:6] == ["none", "none"]
    assert lines["api:gpt-4.1-mini"][:2] == ["500", "200,000"]
    assert lines["api:gpt-4.1-mini"][4:6] == ["0.0", "150,000"]  # known and spent


def test_failures_name_the_first_documents_then_the_command_for_the_rest() -> None:
    rows = [FailedDocument(n, f"docs/{n}.pdf", "encrypted_pdf", "needs a password")
            for n in range(tables.FAILED_SHOWN)]
    lines = tables.failures(7, rows, 12)
    assert lines[0] == "12 documents failed:"
    assert lines[1] == "  docs/0.pdf: encrypted_pdf: needs a password"
    assert len(lines) == 2 + tables.FAILED_SHOWN
    assert lines[-1] == ("  and 7 more; `docpipe results 7 --failed` lists them all with "
                         "their messages")
    assert tables.failures(7, rows[:1], 1)[0] == "1 document failed:"
    assert tables.failures(7, [], 0) == []


def run_report(run_id: int, **values: object) -> dict[str, object]:
    report: dict[str, object] = {
        "run_id": run_id, "pipeline": "summarise-contracts-v2", "status": "finished",
        "documents": 1_234_567, "documents_by_status": {"succeeded": 1_234_000, "failed": 560},
        "documents_succeeded": 1_234_000, "documents_failed": 560, "documents_pending": 7,
        "duplicates": 16, "attempts": 1_300_123,
        "rate_limited": 65_432, "input_tokens": 987_654_321, "cached_tokens": 123_456_789,
        "output_tokens": 45_678_901, "cost_usd": 1234.56789}
    return report | values


def test_status_fits_80_columns_by_wrapping_never_cutting_a_number() -> None:
    reports = [run_report(1), run_report(22, status="running")]
    narrow = Console(width=80, record=True)
    narrow.print(tables.runs(reports, narrow))
    text = narrow.export_text()
    assert "…" not in text and max(map(len, text.splitlines())) <= 80
    flat = " ".join(text.split())
    for figure in ("1,234,567", "succeeded 1,234,000", "failed 560", "pending 7", "duplicates 16",
                   "1,300,123", "429s 65,432", "987,654,321", "123,456,789", "45,678,901",
                   "$1234.5679", "run 22", "running"):
        assert figure in flat, figure
    wide = Console(width=200, record=True)
    table = tables.runs(reports, wide)
    wide.print(table)
    assert "1,234,567" in wide.export_text() and "…" not in wide.export_text()
    assert len(table.rows) == 2  # type: ignore[attr-defined]
