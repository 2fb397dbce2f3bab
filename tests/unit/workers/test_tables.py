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
