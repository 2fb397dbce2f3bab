"""What the CLI promises about runs, on a clean folder in one-machine mode: the same line and
exit code for a run that does not exist, no run for paths that match nothing, and a run
whose documents failed that exits with its own code and names them."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.support.services import docpipe_env, run_docpipe

pytestmark = pytest.mark.e2e

EXIT_NOT_FOUND, EXIT_USAGE, EXIT_DOCUMENTS_FAILED = 1, 2, 5


def fresh_env() -> dict[str, str]:
    env = docpipe_env()
    for key in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "DOCPIPE_BROKER_URL",
                "DOCPIPE_DATABASE_URL"):
        env.pop(key, None)
    return env


def runs_in(folder: Path) -> int:
    with sqlite3.connect(folder / ".docpipe" / "docpipe.db") as connection:
        return int(connection.execute("SELECT count(*) FROM runs").fetchone()[0])


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("command", [
    ["status", "999"], ["status", "999", "--watch"], ["report", "999"],
    ["results", "999"], ["results", "999", "--failed"], ["cancel", "999"],
    ["replay", "999"], ["resume", "999"],
])
def test_a_missing_run_exits_1_with_the_same_line_everywhere(command: list[str],
                                                             tmp_path: Path) -> None:
    env = fresh_env()
    run_docpipe("db", "upgrade", env=env, cwd=tmp_path)
    result = run_docpipe(*command, env=env, cwd=tmp_path, check=False)
    assert result.returncode == EXIT_NOT_FOUND, result.stderr
    assert one_line(result.stderr) == \
        "docpipe: no run 999; `docpipe status` lists the runs"
    assert result.stdout == ""


@pytest.mark.parametrize("command", [["ingest"], ["estimate"], ["run", "--simulate"]])
def test_paths_that_match_nothing_create_no_run(command: list[str], tmp_path: Path) -> None:
    env = fresh_env()
    run_docpipe("db", "upgrade", env=env, cwd=tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "real.txt").write_text("A real document about invoices.", encoding="utf-8")
    for paths in (["missing.txt"], ["docs/*.pdf"], ["empty"], ["real.txt", "typo.txt"]):
        result = run_docpipe(*command, *paths, env=env, cwd=tmp_path, check=False)
        assert result.returncode == EXIT_USAGE, (paths, result.stderr)
        line = one_line(result.stderr)
        unmatched = [p for p in paths if p != "real.txt"]
        assert f"{', '.join(unmatched)} match" in line, line
        assert "nothing was created" in line
        assert runs_in(tmp_path) == 0


def test_a_run_with_failed_documents_exits_5_and_names_them(tmp_path: Path) -> None:
    env = fresh_env()
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n in range(3):
        (corpus / f"letter-{n}.txt").write_text(f"Dear customer {n}, your invoice is due.",
                                                encoding="utf-8")
    (corpus / "empty.txt").write_text("", encoding="utf-8")
    (corpus / "blob.txt").write_bytes(bytes(range(256)) * 4)

    result = run_docpipe("run", "--simulate", "corpus", env=env, cwd=tmp_path, check=False,
                         timeout=180)
    assert result.returncode == EXIT_DOCUMENTS_FAILED, result.stderr
    out = result.stdout
    assert "2 documents failed:" in out
    assert "corpus/empty.txt: empty_file:" in out
    assert "corpus/blob.txt: binary_content:" in out
    assert "`docpipe results 1 --failed` lists them with their messages" in out

    status = run_docpipe("status", "1", env=env, cwd=tmp_path)
    assert "2 documents failed:" in status.stdout and "empty_file" in status.stdout
    counts = json.loads(run_docpipe("status", "1", "--json", env=env, cwd=tmp_path).stdout)
    assert (counts["documents"], counts["documents_failed"]) == (5, 2)

    failed = run_docpipe("results", "1", "--failed", env=env, cwd=tmp_path).stdout
    records = [json.loads(line) for line in failed.splitlines()]
    assert sorted(r["error"]["code"] for r in records) == ["binary_content", "empty_file"]

    replay = run_docpipe("replay", "1", env=env, cwd=tmp_path)
    assert "0 items replayed" in replay.stdout
    assert ("2 skipped (1 binary_content, 1 empty_file): their files could not be read"
            in replay.stdout)

    report = tmp_path / "report.html"
    run_docpipe("report", "1", "-o", str(report), env=env, cwd=tmp_path)
    page = report.read_text(encoding="utf-8")
    assert "Failed documents" in page and "empty_file" in page
    assert "docpipe results 1 --failed" in page


def test_a_run_whose_documents_all_succeed_exits_0(tmp_path: Path) -> None:
    env = fresh_env()
    (tmp_path / "note.txt").write_text("A short note about a delivery.", encoding="utf-8")
    result = run_docpipe("run", "--simulate", "note.txt", env=env, cwd=tmp_path,
                         timeout=180)
    assert result.returncode == 0
    assert "failed:" not in result.stdout


def house_pipeline(folder: Path, model: str) -> None:
    """A pipeline ``house`` on ``model``, found through DOCPIPE_PIPELINES."""
    (folder / "house.toml").write_text(f'''
name = "house"
model = "{model}"
instructions = "Summarise the document."
[schema]
type = "object"
required = ["line"]
additionalProperties = false
properties = {{line = {{type = "string"}}}}
''')


def test_a_model_docpipe_does_not_know_warns_and_strict_refuses_it(tmp_path: Path) -> None:
    env = fresh_env() | {"DOCPIPE_PIPELINES": str(tmp_path / "house.toml")}
    house_pipeline(tmp_path, "my-azure-deployment")
    run_docpipe("db", "upgrade", env=env, cwd=tmp_path)
    (tmp_path / "a.txt").write_text("A memo about the quarterly accounts.", encoding="utf-8")

    listed = run_docpipe("pipelines", "--json", env=env, cwd=tmp_path)
    warnings = {p["name"]: p["warning"] for p in json.loads(listed.stdout)}
    assert warnings["summarise"] is None and "my-azure-deployment" in warnings["house"]
    estimated = run_docpipe("estimate", "a.txt", "-p", "house", env=env, cwd=tmp_path)
    assert one_line(estimated.stderr) == (
        "warning: pipeline house: model 'my-azure-deployment' is not one docpipe knows: its "
        "parameters and limits are not checked before the first call (a typo is a "
        "model_not_found pause then)")
    for command in (["estimate"], ["ingest"], ["run", "--simulate"]):
        result = run_docpipe(*command, "a.txt", "-p", "house", "--strict", env=env,
                             cwd=tmp_path, check=False)
        assert result.returncode == EXIT_USAGE, result.stderr
        assert one_line(result.stderr).startswith(
            f"docpipe: {tmp_path / 'house.toml'}: model: model 'my-azure-deployment' is not "
            "one docpipe knows")
        assert "--strict refuses it" in result.stderr
    assert runs_in(tmp_path) == 0


def test_a_budget_on_a_model_without_a_price_is_refused_with_the_setting_to_add(
        tmp_path: Path) -> None:
    env = fresh_env() | {"DOCPIPE_PIPELINES": str(tmp_path / "house.toml")}
    house_pipeline(tmp_path, "ft:gpt-4.1-mini:acme::x1")  # a fine-tune: no shipped price
    run_docpipe("db", "upgrade", env=env, cwd=tmp_path)
    (tmp_path / "a.txt").write_text("A memo about the quarterly accounts.", encoding="utf-8")
    for command in (["ingest"], ["run", "--simulate"]):
        result = run_docpipe(*command, "a.txt", "-p", "house", "--budget-usd", "5", env=env,
                             cwd=tmp_path, check=False)
        assert result.returncode == EXIT_USAGE, result.stderr
        line = one_line(result.stderr)
        assert line.startswith("docpipe: --budget-usd cannot be enforced: docpipe has no "
                               "price for model 'ft:gpt-4.1-mini:acme::x1'. Add it to "
                               "DOCPIPE_PRICES"), line
    assert runs_in(tmp_path) == 0

    priced = env | {"DOCPIPE_PRICES": json.dumps({"ft:gpt-4.1-mini:acme::x1": {
        "input": 0.8, "cached_input": 0.2, "output": 3.2}})}
    run_docpipe("run", "--simulate", "a.txt", "-p", "house", "--budget-usd", "5", env=priced,
                cwd=tmp_path, timeout=180)
    status = json.loads(run_docpipe("status", "1", "--json", env=priced, cwd=tmp_path).stdout)
    assert (status["succeeded"], status["failed"]) == (1, 0)
    assert 0 < float(status["cost_usd"]) <= 5
