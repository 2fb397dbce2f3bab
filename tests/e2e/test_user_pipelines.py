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
