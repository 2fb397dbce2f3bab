"""User pipelines from TOML, YAML and Python files: loaded, checked, versioned, reloaded."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from pipelines import BUILTIN_PIPELINES, OutputError, get_pipeline, list_pipelines
from pipelines.loader import PipelineDefinitionError, Registry, load_file
from tests.support.corpus import INVOICE_SCHEMA, write_invoices


def test_a_toml_pipeline_loads_with_its_request_shape(tmp_path: Path) -> None:
    [pipeline] = load_file(write_invoices(tmp_path))
    assert (pipeline.name, pipeline.model, pipeline.source) == (
        "invoices", "gpt-4.1-mini", str(tmp_path / "invoices.toml"))
    body = pipeline.request("Invoice 7: total 12.00 EUR")
    assert body["text"]["format"] == {"type": "json_schema", "name": "Invoice", "strict": True,
                                      "schema": INVOICE_SCHEMA}
    assert body["temperature"] == 0 and "reasoning" not in body
    assert body["max_output_tokens"] == 800
    assert body["instructions"].startswith("Extract the invoice's number")
    assert pipeline.max_input_tokens == 8000 and pipeline.image_detail == "low"


def test_a_reasoning_pipeline_sends_its_effort(tmp_path: Path) -> None:
    path = write_invoices(tmp_path)
    path.write_text(path.read_text().replace('model = "gpt-4.1-mini"', 'model = "o4-mini"')
                    .replace("temperature = 0", 'reasoning_effort = "low"'))
    [pipeline] = load_file(path)
    body = pipeline.request("Invoice 7: total 12.00 EUR")
    assert body["reasoning"] == {"effort": "low"} and "temperature" not in body


def test_an_inline_schema_and_instructions_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "prompt.md").write_text("Summarise the memo in one line.")
    (tmp_path / "memo.toml").write_text('''
name = "memo"
model = "gpt-4.1-nano"
instructions_file = "prompt.md"
tools = [{type = "web_search"}]

[schema]
type = "object"
required = ["line"]
additionalProperties = false
[schema.properties.line]
type = "string"
''')
    [memo] = load_file(tmp_path / "memo.toml")
    assert memo.instructions == "Summarise the memo in one line."
    assert memo.schema["properties"] == {"line": {"type": "string"}}
    assert memo.request("x")["tools"] == [{"type": "web_search"}]
    assert memo.validate_output('{"line": "ok"}') == {"line": "ok"}


def test_several_pipelines_in_one_yaml_file(tmp_path: Path) -> None:
    (tmp_path / "invoice.schema.json").write_text(json.dumps(INVOICE_SCHEMA))
    (tmp_path / "set.yaml").write_text('''
pipelines:
  - name: invoices-fast
    model: gpt-4.1-nano
    instructions: Extract the invoice.
    schema_file: invoice.schema.json
  - name: invoices-careful
    model: gpt-4.1
    instructions: Extract the invoice carefully.
    schema_file: invoice.schema.json
    scanned_pdf: images
    scanned_page_chars: 400
    html_whole_page: true
''')
    fast, careful = load_file(tmp_path / "set.yaml")
    assert (fast.name, careful.name) == ("invoices-fast", "invoices-careful")
    assert careful.scanned_pdf == "images" and fast.version != careful.version
    assert careful.html_whole_page and not fast.html_whole_page
    assert (careful.reading.scanned_page_chars, fast.reading.scanned_page_chars) == (400, 100)


def test_a_python_module_with_a_pydantic_model(tmp_path: Path) -> None:
    (tmp_path / "contracts.py").write_text('''
from pydantic import BaseModel, ConfigDict
from pipelines import Pipeline
from tests.support.corpus import INVOICE_SCHEMA, write_invoices


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parties: list[str]
    term_months: int | None


CONTRACTS = Pipeline(name="contracts", model="gpt-4.1-mini",
                     instructions="List the parties and the term.", output=Contract)
''')
    [contracts] = load_file(tmp_path / "contracts.py")
    assert contracts.source == str(tmp_path / "contracts.py")
    assert contracts.schema_name == "Contract"
    assert contracts.schema["required"] == ["parties", "term_months"]
    assert contracts.validate_output('{"parties": ["A"], "term_months": null}') == \
        {"parties": ["A"], "term_months": None}


@pytest.mark.parametrize(("change", "rule"), [
    (lambda s: s.pop("additionalProperties"),
     "(root): 'additionalProperties' must be supplied and be false"),
    (lambda s: s["required"].remove("currency"),
     "(root): every property must be required; missing ['currency']"),
    (lambda s: s["properties"]["lines"].update(uniqueItems=True),
     "properties/lines: 'uniqueItems' is not permitted"),
    (lambda s: s["properties"]["lines"]["items"].pop("additionalProperties"),
     "properties/lines/items: 'additionalProperties' must be supplied and be false"),
])
def test_a_schema_strict_mode_would_refuse_is_refused_at_load_time(
        tmp_path: Path, change: Any, rule: str) -> None:
    path = write_invoices(tmp_path)
    schema = json.loads(json.dumps(INVOICE_SCHEMA))
    change(schema)
    (tmp_path / "invoice.schema.json").write_text(json.dumps(schema))
    with pytest.raises(PipelineDefinitionError) as caught:
        load_file(path)
    assert str(path) in caught.value.message and rule in caught.value.message


def test_a_schema_nested_too_deep_is_refused(tmp_path: Path) -> None:
    node: dict[str, Any] = {"type": "string"}
    for _ in range(11):
        node = {"type": "object", "properties": {"x": node}, "required": ["x"],
                "additionalProperties": False}
    path = write_invoices(tmp_path)
    (tmp_path / "invoice.schema.json").write_text(json.dumps(node))
    with pytest.raises(PipelineDefinitionError, match="levels of nesting exceeds limit of 10"):
        load_file(path)


@pytest.mark.parametrize(("extra", "message"), [
    ('colour = "blue"\n', "colour: Extra inputs are not permitted"),
    ("max_output_tokens = 8\n", "max_output_tokens: Input should be greater than or equal to 16"),
    ('scanned_pdf = "ocr"\n', "scanned_pdf: Input should be 'file', 'images' or 'refuse'"),
    ('parameters = {model = "gpt-5"}\n', "parameters: ['model'] are set by docpipe"),
])
def test_bad_fields_are_named(tmp_path: Path, extra: str, message: str) -> None:
    path = write_invoices(tmp_path)
    lines = path.read_text().replace("max_output_tokens = 800\n", "")
    path.write_text(extra + lines)
    with pytest.raises(PipelineDefinitionError) as caught:
        load_file(path)
    assert message in caught.value.message, caught.value.message


def test_missing_instructions_and_broken_toml(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('name = "a"\nmodel = "m"\nschema_file = "s.json"\n')
    with pytest.raises(PipelineDefinitionError, match="exactly one of instructions"):
        load_file(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text('name = "b\n')
    with pytest.raises(PipelineDefinitionError, match="cannot read"):
        load_file(tmp_path / "b.toml")


def test_a_registry_finds_folder_files_and_refuses_shadowing(tmp_path: Path) -> None:
    write_invoices(tmp_path)
    names = [p.name for p in list_pipelines([tmp_path])]
    assert names == sorted([*BUILTIN_PIPELINES, "invoices"])
    assert get_pipeline("summarise", [tmp_path]) is BUILTIN_PIPELINES["summarise"]
    (tmp_path / "clash.toml").write_text(
        (tmp_path / "invoices.toml").read_text().replace('name = "invoices"',
                                                         'name = "summarise"'))
    with pytest.raises(PipelineDefinitionError, match="'summarise' is already defined"):
        Registry([tmp_path]).pipelines()


def test_an_edited_file_is_reloaded_with_a_new_version(tmp_path: Path) -> None:
    registry = Registry([write_invoices(tmp_path)])
    before = registry.get("invoices")
    assert registry.get("invoices") is before  # unchanged files are not read again
    write_invoices(tmp_path, instructions="Extract only the total.")
    stat = (tmp_path / "invoices.toml").stat()
    os.utime(tmp_path / "invoices.toml", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = registry.get("invoices")
    assert after.version != before.version and "only the total" in after.instructions


def test_json_schema_output_is_validated(tmp_path: Path) -> None:
    [pipeline] = load_file(write_invoices(tmp_path))
    good = {"number": "7", "total": 12.0, "currency": None, "lines": []}
    assert pipeline.validate_output(json.dumps(good)) == good
    with pytest.raises(OutputError) as caught:
        pipeline.validate_output(json.dumps(good | {"total": "twelve"}))
    assert caught.value.code == "schema_violation" and "at total" in caught.value.message
    with pytest.raises(OutputError, match="not JSON"):
        pipeline.validate_output('{"number": ')
