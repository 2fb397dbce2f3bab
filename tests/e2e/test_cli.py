"""The CLI as a newcomer meets it: the demo on embedded defaults, and clear refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.support.services import docpipe_env, run_docpipe
from workers.cli import app

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "documents"


def fresh_env(**values: object) -> dict[str, str]:
    env = docpipe_env(**values)
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    return env


def test_demo_runs_every_example_on_embedded_defaults(tmp_path: Path) -> None:
    env = fresh_env()
    result = run_docpipe("demo", env=env, cwd=tmp_path, timeout=180)
    out = result.stdout
    assert "simulated" in out
    for path in EXAMPLES.iterdir():
        assert path.name in out
    assert (tmp_path / ".docpipe" / "docpipe.db").exists()

    status = json.loads(run_docpipe("status", "1", "--json", env=env, cwd=tmp_path).stdout)
    records = sum(1 for _ in (EXAMPLES / "reviews.jsonl").open())
    expected = len(list(EXAMPLES.iterdir())) - 1 + records
    assert (status["total"], status["succeeded"], status["failed"]) == (expected, expected, 0)
    assert status["attempts"] == expected and status["input_tokens"] > 0

    lines = run_docpipe("results", "1", "--format", "csv", env=env, cwd=tmp_path).stdout
    assert lines.splitlines()[0].startswith("item_id,source,content_hash,status")
    assert len(lines.strip().splitlines()) == expected + 1


def test_run_without_a_key_refuses_unless_simulated(tmp_path: Path) -> None:
    result = run_docpipe("run", str(EXAMPLES), env=fresh_env(), cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "OPENAI_API_KEY is not set" in result.stderr and "--simulate" in result.stderr


def test_commands_refuse_an_unmigrated_database(tmp_path: Path) -> None:
    env = fresh_env(database_url=f"sqlite:///{tmp_path / 'other.db'}")
    result = run_docpipe("status", "--json", env=env, cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "run `docpipe db upgrade`" in result.stderr
    run_docpipe("db", "upgrade", env=env, cwd=tmp_path)
    assert json.loads(run_docpipe("status", "--json", env=env, cwd=tmp_path).stdout) == []


def test_pipelines_lists_versions(tmp_path: Path) -> None:
    listed = json.loads(run_docpipe("pipelines", "--json", env=fresh_env(), cwd=tmp_path).stdout)
    assert {p["name"] for p in listed} == {"summarise", "extract"}
    assert all(len(p["version"]) == 16 for p in listed)


@pytest.mark.parametrize("command", [
    [], ["run"], ["demo"], ["ingest"], ["worker"], ["status"], ["results"], ["replay"],
    ["resume"], ["pipelines"], ["pipelines", "show"], ["simulator"], ["db"], ["db", "upgrade"],
    ["reprocess"], ["cancel"], ["beat"], ["estimate"], ["limits"], ["flower"], ["report"],
])
def test_every_command_has_help(command: list[str], tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    # In process: the console script's own start is covered by the test below, and a child
    # process per command cost a second each for nothing more.
    monkeypatch.chdir(tmp_path)
    for key, value in fresh_env().items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output and len(result.output) > 100
    assert os.path.exists(tmp_path)


def test_the_console_script_shows_help(tmp_path: Path) -> None:
    result = run_docpipe("--help", env=fresh_env(), cwd=tmp_path)
    assert "Usage" in result.stdout and len(result.stdout) > 100
