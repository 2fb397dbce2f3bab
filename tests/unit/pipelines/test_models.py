"""docpipe's model table: a pipeline whose request its model would refuse does not load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines import SUMMARISE
from pipelines.loader import PipelineDefinitionError, load_file
from pipelines.models import MODELS, base_model, limits, refused_parameters
from tests.support.corpus import write_invoices
from tests.support.requests import CASES, Verdict, changed

#: The refusals that come from the model: every document of a run would meet them.
MODEL_CODES = {"unsupported_parameter", "unsupported_value", "integer_above_max_value"}
#: The request fields whose refusal depends on the model.
MODEL_PARAMS = {"temperature", "top_p", "reasoning.effort", "max_output_tokens"}
BY_MODEL = [c for c in CASES if c.verdict is None or c.verdict.code in MODEL_CODES
            and c.verdict.param in MODEL_PARAMS]


@pytest.mark.parametrize(("changes", "verdict"), [(c.changes, c.verdict) for c in BY_MODEL],
                         ids=[c.name for c in BY_MODEL])
def test_the_lint_refuses_what_the_api_refuses_for_the_model(
        changes: dict[str, Any], verdict: Verdict | None) -> None:
    body = changed(SUMMARISE.request("text"), changes)
    found = [r.param for r in refused_parameters(str(body["model"]), body)]
    assert found == ([] if verdict is None else [verdict.param])


def test_snapshots_and_fine_tunes_are_their_base() -> None:
    assert base_model("gpt-4.1-mini-2025-04-14") == "gpt-4.1-mini"
    assert base_model("ft:o4-mini:acme::x1") == "o4-mini"
    assert base_model("gpt-4.1-min") is None and base_model("ft:nope:acme::x") is None
    assert all(limits(name) is MODELS[name] for name in MODELS)


def _invoices(tmp_path: Path, **fields: str) -> Path:
    """The invoices pipeline file with ``fields`` (TOML values) set, or removed where ""."""
    path = write_invoices(tmp_path)
    lines = [line for line in path.read_text().splitlines()
             if line.split(" = ")[0] not in fields]
    path.write_text("\n".join(lines + [f"{k} = {v}" for k, v in fields.items() if v]) + "\n")
    return path


@pytest.mark.parametrize(("fields", "field", "reason"), [
    ({"temperature": "", "reasoning_effort": '"low"'}, "reasoning_effort",
     "gpt-4.1-mini is not a reasoning model and does not take reasoning.effort"),
    ({"model": '"o4-mini"'}, "temperature",
     "o4-mini is a reasoning model and does not take temperature"),
    ({"model": '"gpt-5"', "temperature": "", "parameters": "{top_p = 0.5}"},
     "parameters.top_p", "gpt-5 is a reasoning model and does not take top_p"),
    ({"model": '"gpt-5.1-codex"', "temperature": "",
      "parameters": '{reasoning = {effort = "none"}}'}, "parameters.reasoning.effort",
     "gpt-5.1-codex does not offer 'none'; it offers low, medium, high"),
    ({"max_output_tokens": "40000", "max_input_tokens": ""}, "max_output_tokens",
     "gpt-4.1-mini writes at most 32,768 tokens"),
    ({"model": '"gpt-4o"', "max_input_tokens": "200000"}, "max_input_tokens",
     "gpt-4o reads at most 128,000 tokens"),
])
def test_a_field_the_model_refuses_fails_the_load_with_file_and_field(
        tmp_path: Path, fields: dict[str, str], field: str, reason: str) -> None:
    path = _invoices(tmp_path, **fields)
    with pytest.raises(PipelineDefinitionError) as info:
        load_file(path)
    assert str(info.value).startswith(f"{path}: {field}: {reason}"), info.value


def test_an_unknown_model_loads_with_a_warning(tmp_path: Path) -> None:
    [known] = load_file(write_invoices(tmp_path))
    assert known.model_warning is None
    [unknown] = load_file(_invoices(tmp_path, model='"my-azure-deployment"'))
    assert unknown.model_warning is not None
    assert "'my-azure-deployment' is not one docpipe knows" in unknown.model_warning


@pytest.mark.parametrize(("tools", "reason"), [
    ('[{type = "function", name = "lookup", parameters = {type = "object"}}]',
     "tools[0]: 'function' tools are run by the caller, who sends their results back in a "
     "second request; docpipe sends one request per document and does not run them"),
    ('[{type = "web_search"}, {type = "computer_use_preview"}]',
     "tools[1]: 'computer_use_preview' tools are run by the caller"),
    ('[{type = "mcp", server_label = "crm", server_url = "https://crm.example/mcp"}]',
     'tools[0]: an MCP tool must set require_approval = "never"'),
])
def test_a_tool_docpipe_cannot_run_fails_the_load_with_the_reason(
        tmp_path: Path, tools: str, reason: str) -> None:
    path = _invoices(tmp_path, tools=tools)
    with pytest.raises(PipelineDefinitionError) as info:
        load_file(path)
    assert f"{path}: pipeline invoices: {reason}" in str(info.value), info.value


def test_tools_the_api_runs_itself_load(tmp_path: Path) -> None:
    [pipeline] = load_file(_invoices(tmp_path, tools=(
        '[{type = "web_search"}, {type = "file_search", vector_store_ids = ["vs_1"]}, '
        '{type = "mcp", server_label = "crm", server_url = "https://crm.example/mcp", '
        'require_approval = "never"}]')))
    assert [t["type"] for t in pipeline.request("x")["tools"]] == ["web_search", "file_search",
                                                                  "mcp"]
