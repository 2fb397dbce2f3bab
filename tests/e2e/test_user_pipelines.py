"""A pipeline the user wrote in TOML, run by a worker that finds it through DOCPIPE_PIPELINES."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support.corpus import INVOICE_SCHEMA, write_corpus, write_invoices
from tests.support.stack import Stack
from workers.db.models import Item, Result, Run
from workers.db.session import session_scope

pytestmark = pytest.mark.e2e

#: Long, shared instructions: past the 1,024 tokens the prompt cache starts at.
HOUSE_RULES = "\n".join(
    f"Rule {n}: amounts are stated in the document's currency, in figures, with two decimals; "
    f"a line item names what was sold and its amount; ignore totals that are not labelled "
    f"as such, and never infer a number the document does not state ({n})."
    for n in range(1, 41))


def test_a_toml_pipeline_runs_end_to_end_and_its_prefix_is_cached(
        stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "house-pipelines"  # not "pipelines": the worker's cwd is tmp_path
    folder.mkdir()
    write_invoices(folder, instructions=HOUSE_RULES)
    stack.settings |= {"pipelines": str(folder), "worker_concurrency": 1}

    listed = {p["name"]: p for p in stack.cli("pipelines", "--json")}
    assert listed["invoices"]["source"] == str(folder / "invoices.toml")
    assert listed["summarise"]["source"] == "built-in"
    shown = json.loads(stack.cli("pipelines", "show", "invoices").stdout)
    assert shown["request"]["text"]["format"]["schema"] == INVOICE_SCHEMA
    assert shown["request"]["temperature"] == 0 and "reasoning" not in shown["request"]
    assert shown["version"] == listed["invoices"]["version"]

    write_corpus(tmp_path / "corpus", 12)
    stack.start_workers(1)
    ingested = stack.ingest(tmp_path / "corpus", pipeline="invoices")
    report = stack.wait_for(ingested["run_id"], timeout=90)
    assert report.succeeded == 12 and report.failed == 0
    # One call at a time under one prompt_cache_key: every call after the first reads the
    # shared instructions and schema from the cache.
    assert report.cached_tokens >= 11 * 1024
    assert report.cache_hit_ratio > 0.5

    with session_scope(stack.database_url) as s:
        run = s.get(Run, ingested["run_id"])
        assert run is not None and run.pipeline == "invoices"
        outputs = s.scalars(select(Result.output).join(Item, Item.result_id == Result.id)
                            .where(Item.run_id == ingested["run_id"])).all()
    assert len(outputs) == 12
    assert all(set(o) == {"number", "total", "currency", "lines"} for o in outputs)


def test_a_pipeline_file_broken_mid_run_pauses_the_run(stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "house-pipelines"  # not "pipelines": the worker's cwd is tmp_path
    folder.mkdir()
    path = write_invoices(folder)
    stack.settings |= {"pipelines": str(folder)}
    write_corpus(tmp_path / "corpus", 3)
    ingested = stack.ingest(tmp_path / "corpus", pipeline="invoices")
    path.write_text(path.read_text() + "\nunknown_field = 1\n")
    stack.start_workers(1)
    stack.wait_for(ingested["run_id"], status="paused", timeout=60)
    with session_scope(stack.database_url) as s:
        run = s.get(Run, ingested["run_id"])
        assert run is not None and run.status_reason is not None
        assert "unknown_field" in run.status_reason and "fix the pipeline file" in \
            run.status_reason


def test_a_request_the_api_refuses_pauses_the_run_and_resume_takes_the_fix(
        stack: Stack, tmp_path: Path) -> None:
    """A pipeline whose request the API refuses (metadata values must be strings: the lint
    does not check metadata, the API does) pauses its run at the first answer, naming the
    field; the fixed file and the printed `docpipe resume` finish the run."""
    folder = tmp_path / "house-pipelines"
    folder.mkdir()
    path = write_invoices(folder)
    good = path.read_text()
    path.write_text(good + "parameters = {metadata = {batch = 7}}\n")
    stack.settings |= {"pipelines": str(folder)}
    write_corpus(tmp_path / "corpus", 40)
    refused_before = stack.simulator.stats()["counters"].get("status_400", 0)
    ingested = stack.ingest(tmp_path / "corpus", pipeline="invoices")
    run_id = ingested["run_id"]
    stack.start_workers(1)
    paused = stack.wait_for(run_id, status="paused", timeout=90)
    reason = paused.status_reason
    assert reason is not None
    assert reason.startswith("request_refused (invalid_type): Invalid type for "
                             "'metadata.batch': expected a string"), reason
    assert reason.endswith(
        "To continue: fix metadata.batch in pipeline invoices (`docpipe pipelines show "
        f"invoices` prints the request it sends), then `docpipe resume {run_id}`."), reason
    # Items were not spent on the same answer: none failed, and only the calls already on
    # the wire when the first answer came (at most the worker's concurrency) were refused.
    refused = stack.simulator.stats()["counters"].get("status_400", 0) - refused_before
    assert 1 <= refused <= 8, refused
    assert paused.failed == 0 and paused.succeeded == 0

    path.write_text(good)
    resumed = stack.cli("resume", str(run_id))
    assert "its pipeline was fixed" in resumed.stdout
    report = stack.wait_for(run_id, timeout=120)
    assert (report.succeeded, report.failed) == (40, 0)


def test_workers_without_the_pipeline_pause_the_run_and_say_what_to_set(
        stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "house-pipelines"
    folder.mkdir()
    write_invoices(folder)
    write_corpus(tmp_path / "corpus", 10)
    stack.settings |= {"pipelines": str(folder)}
    ingested = stack.ingest(tmp_path / "corpus", pipeline="invoices")
    run_id = ingested["run_id"]
    stack.settings.pop("pipelines")  # the workers are started without it
    stack.start_workers(1)
    paused = stack.wait_for(run_id, status="paused", timeout=90)
    assert paused.failed == 0
    reason = paused.status_reason
    assert reason is not None
    assert reason.startswith("pipeline (pipeline_not_found): the workers have no pipeline "
                             "named 'invoices'"), reason
    assert "start the workers with DOCPIPE_PIPELINES naming the file or folder that defines " \
        f"the pipeline, as the CLI's did, then `docpipe resume {run_id}`" in reason

    stack.stop_workers()
    stack.settings |= {"pipelines": str(folder)}
    stack.start_workers(1)
    stack.cli("resume", str(run_id))
    assert stack.wait_for(run_id, timeout=120).succeeded == 10
