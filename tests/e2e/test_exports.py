"""docpipe results as a data engineer loads it: one row per path (duplicates traced), the
format from the file's extension, Parquet, CSV booleans, the simulated flag everywhere, and
the SQL view giving the same rows."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.support.services import docpipe_env, run_docpipe
from workers.ops.exports import RUN_COLUMNS

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], str]:
    """A one-machine run over 3 documents, 2 copies of one of them and an empty file."""
    folder = tmp_path_factory.mktemp("exports")
    env = docpipe_env()
    for key in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "DOCPIPE_BROKER_URL",
                "DOCPIPE_DATABASE_URL"):
        env.pop(key, None)
    corpus = folder / "corpus"
    (corpus / "copies").mkdir(parents=True)
    for name, words in (("a.txt", "Invoice 1 from Northwind, due in March."),
                        ("b.txt", "Minutes of the board meeting in Vienna."),
                        ("c.txt", "A delivery note for twelve pallets.")):
        (corpus / name).write_text(words, encoding="utf-8")
    (corpus / "copies" / "a-again.txt").write_bytes((corpus / "a.txt").read_bytes())
    (corpus / "copies" / "a-third.txt").write_bytes((corpus / "a.txt").read_bytes())
    (corpus / "empty.txt").write_text("", encoding="utf-8")
    result = run_docpipe("run", "--simulate", "corpus", env=env, cwd=folder, check=False,
                         timeout=180)
    assert result.returncode == 5, result.stderr  # the empty file failed
    return folder, env, result.stdout


def records(folder: Path, env: dict[str, str], *args: str) -> list[dict[str, object]]:
    out = run_docpipe("results", "1", *args, env=env, cwd=folder).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_every_path_is_a_row_and_a_duplicate_carries_its_documents_result(
        finished: tuple[Path, dict[str, str], str]) -> None:
    folder, env, out = finished
    assert "2 duplicates" in out or "duplicates │ 2" in out.replace("  ", " ")
    rows = {r["source"]: r for r in records(folder, env)}
    assert sorted(rows) == ["corpus/a.txt", "corpus/b.txt", "corpus/c.txt",
                            "corpus/copies/a-again.txt", "corpus/copies/a-third.txt",
                            "corpus/empty.txt"]
    first = rows["corpus/a.txt"]
    assert first["duplicate_of"] is None and first["status"] == "succeeded"
    assert first["calls"] == 1 and first["input_tokens"] > 0 and first["cost_usd"] > 0
    assert first["simulated"] is True and first["model"] and first["pipeline_version"]
    for copy in ("corpus/copies/a-again.txt", "corpus/copies/a-third.txt"):
        assert rows[copy]["duplicate_of"] == "corpus/a.txt"
        assert rows[copy]["output"] == first["output"] and rows[copy]["status"] == "succeeded"
        assert (rows[copy]["calls"], rows[copy]["cost_usd"]) == (0, 0.0), "paid once"
    assert rows["corpus/empty.txt"]["error"]["code"] == "empty_file"

    status = json.loads(run_docpipe("status", "1", "--json", env=env, cwd=folder).stdout)
    assert (status["documents"], status["documents_failed"], status["duplicates"]) == (4, 1, 2)
    assert status["simulated"] is True and status["simulated_calls"] == status["attempts"]


def test_the_format_follows_the_extension_and_parquet_loads(
        finished: tuple[Path, dict[str, str], str], tmp_path: Path) -> None:
    folder, env, _ = finished
    as_json = records(folder, env)

    run_docpipe("results", "1", "-o", str(tmp_path / "out.csv"), env=env, cwd=folder)
    with open(tmp_path / "out.csv", newline="", encoding="utf-8") as stream:
        table = list(csv.DictReader(stream))
    assert tuple(table[0]) == RUN_COLUMNS
    assert [r["source"] for r in table] == [r["source"] for r in as_json]
    # the empty file made no call; every other path's answer came from the simulator
    assert {r["source"]: r["simulated"] for r in table} == {
        r["source"]: "false" if r["source"] == "corpus/empty.txt" else "true" for r in table}
    assert {r["reused"] for r in table} == {"false"}, "true/false, not Python's False"

    run_docpipe("results", "1", "-o", str(tmp_path / "out.parquet"), env=env, cwd=folder)
    parquet = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [r["source"] for r in parquet] == [r["source"] for r in as_json]
    assert [r["input_tokens"] for r in parquet] == [r["input_tokens"] for r in as_json]
    by_source = {r["source"]: r for r in parquet}
    assert json.loads(by_source["corpus/a.txt"]["output"]) == as_json[0]["output"]
    assert float(by_source["corpus/a.txt"]["cost_usd"]) == as_json[0]["cost_usd"]

    guessed = run_docpipe("results", "1", "-o", str(tmp_path / "guess.xls"), env=env,
                          cwd=folder, check=False)
    assert guessed.returncode == 2 and "cannot tell the format" in guessed.stderr
    assert len(guessed.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "guess.xls").exists()
    run_docpipe("results", "1", "--format", "csv", "-o", str(tmp_path / "named.txt"),
                env=env, cwd=folder)
    assert (tmp_path / "named.txt").read_text(encoding="utf-8").startswith("item_id,source,")
    to_terminal = run_docpipe("results", "1", "--format", "parquet", env=env, cwd=folder,
                              check=False)
    assert to_terminal.returncode == 2 and "-o FILE.parquet" in to_terminal.stderr


def test_the_sql_view_gives_the_exports_rows(
        finished: tuple[Path, dict[str, str], str]) -> None:
    folder, env, _ = finished
    as_json = records(folder, env)
    with sqlite3.connect(folder / ".docpipe" / "docpipe.db") as connection:
        view = connection.execute(
            "SELECT source, duplicate_of, status, calls, input_tokens, output_tokens "
            "FROM document_results WHERE run_id = 1 "
            "ORDER BY item_id, duplicate_of IS NOT NULL, source").fetchall()
    assert view == [(r["source"], r["duplicate_of"], r["status"], r["calls"],
                     r["input_tokens"], r["output_tokens"]) for r in as_json]


def test_every_view_of_a_simulated_run_says_so(
        finished: tuple[Path, dict[str, str], str], tmp_path: Path) -> None:
    folder, env, out = finished
    assert "simulated: docpipe's simulator answered" in out
    status = run_docpipe("status", "1", env=env, cwd=folder).stdout
    assert "simulator answered" in status.replace("\n", " ")
    listing = run_docpipe("status", env=env, cwd=folder).stdout
    assert "simulator answered" in listing.replace("\n", " ")
    run_docpipe("report", "1", "-o", str(tmp_path / "r.html"), env=env, cwd=folder)
    assert "Simulated: docpipe's simulator answered" in (tmp_path / "r.html").read_text(
        encoding="utf-8")
