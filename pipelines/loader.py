"""User pipelines: defined in files the user owns, found where the settings point.

A TOML or YAML file holds one pipeline (its fields at the top level) or several (a
``pipelines`` list). A Python module defines :class:`~pipelines.definitions.Pipeline`
objects, usually with a Pydantic model as ``output``. Every definition is checked when it
is loaded, schema included, so a mistake is reported with its file and field, not by the
API at the first call.

Example ``invoices.toml``::

    name = "invoices"
    model = "gpt-4.1-mini"
    instructions_file = "invoices.md"
    schema_file = "invoice.schema.json"
    max_output_tokens = 800
    reasoning_effort = "low"
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import sys
import threading
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipelines.builtin import BUILTIN_PIPELINES
from pipelines.definitions import RESERVED_PARAMETERS, Pipeline, RefusedByModel
from pipelines.errors import PipelineError, PipelineNotFound
from pipelines.schema import strict_violations

#: File name endings read as pipeline definitions.
SUFFIXES = (".toml", ".yaml", ".yml", ".py")


class PipelineDefinitionError(PipelineError):
    """A pipeline file that cannot be loaded: the message names the file and the field."""

    code = "invalid_pipeline"


class PipelineSpec(BaseModel):
    """The fields of a pipeline in a TOML or YAML file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")
    model: str = Field(min_length=1)
    description: str = ""
    instructions: str | None = None
    instructions_file: str | None = None
    output_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    schema_file: str | None = None
    schema_name: str | None = None
    max_output_tokens: int = Field(default=2000, ge=16)
    temperature: float | None = Field(default=None, ge=0, le=2)
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    tools: list[dict[str, Any]] | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    max_input_tokens: int | None = Field(default=None, gt=0)
    chunk_overlap: int = Field(default=200, ge=0)
    scanned_pdf: Literal["file", "images", "refuse"] = "file"
    scanned_page_chars: int = Field(default=100, ge=0)
    image_detail: Literal["auto", "low", "high"] = "auto"
    html_whole_page: bool = False

    @model_validator(mode="after")
    def _one_of_each(self) -> PipelineSpec:
        if (self.instructions is None) == (self.instructions_file is None):
            raise ValueError("give exactly one of instructions and instructions_file")
        if (self.output_schema is None) == (self.schema_file is None):
            raise ValueError("give exactly one of schema and schema_file")
        return self


def load_file(path: Path) -> list[Pipeline]:
    """The pipelines defined in one file.

    Raises:
        PipelineDefinitionError: the file cannot be read, or a definition in it is invalid.
    """
    if path.suffix == ".py":
        return _load_module(path)
    try:
        raw = path.read_text(encoding="utf-8")
        data = tomllib.loads(raw) if path.suffix == ".toml" else _yaml(raw)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PipelineDefinitionError(f"{path}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise PipelineDefinitionError(f"{path}: expected a table of pipeline fields")
    entries = data["pipelines"] if set(data) == {"pipelines"} else [data]
    if not isinstance(entries, list):
        raise PipelineDefinitionError(f"{path}: 'pipelines' must be a list of tables")
    return [_from_spec(path, index, entry) for index, entry in enumerate(entries)]


def _yaml(raw: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from exc


def _from_spec(path: Path, index: int, entry: Any) -> Pipeline:
    where = f"{path}" if index == 0 else f"{path} (pipeline {index + 1})"
    try:
        spec = PipelineSpec.model_validate(entry)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(pipeline)"
        raise PipelineDefinitionError(f"{where}: {field}: {first['msg']}") from exc
    instructions = spec.instructions if spec.instructions is not None else \
        _read_beside(path, spec.instructions_file, where)
    schema = spec.output_schema
    if schema is None:
        try:
            schema = json.loads(_read_beside(path, spec.schema_file, where))
        except json.JSONDecodeError as exc:
            raise PipelineDefinitionError(
                f"{where}: schema_file {spec.schema_file}: not JSON: {exc}") from exc
        if not isinstance(schema, dict):
            raise PipelineDefinitionError(f"{where}: schema_file {spec.schema_file}: the "
                                          "schema must be a JSON object")
    if problems := strict_violations(schema):
        raise PipelineDefinitionError(
            f"{where}: the schema would be refused in strict mode: " + "; ".join(problems))
    parameters = dict(spec.parameters)
    if reserved := sorted(RESERVED_PARAMETERS & parameters.keys()):
        raise PipelineDefinitionError(f"{where}: parameters: {reserved} are set by docpipe")
    if spec.reasoning_effort is not None:
        parameters["reasoning"] = {"effort": spec.reasoning_effort}
    if spec.tools is not None:
        parameters["tools"] = spec.tools
    try:
        return Pipeline(
            name=spec.name, model=spec.model, instructions=instructions,
            output_schema=schema, schema_title=spec.schema_name,
            max_output_tokens=spec.max_output_tokens, temperature=spec.temperature,
            description=spec.description, parameters=parameters,
            max_input_tokens=spec.max_input_tokens, chunk_overlap=spec.chunk_overlap,
            scanned_pdf=spec.scanned_pdf, scanned_page_chars=spec.scanned_page_chars,
            image_detail=spec.image_detail,
            html_whole_page=spec.html_whole_page, source=str(path),
        )
    except RefusedByModel as exc:
        field = _SPEC_FIELDS.get(exc.refused.param, f"parameters.{exc.refused.param}")
        if exc.refused.param == "reasoning.effort" and spec.reasoning_effort is not None:
            field = "reasoning_effort"
        raise PipelineDefinitionError(f"{where}: {field}: {exc.refused.reason}") from exc
    except ValueError as exc:
        raise PipelineDefinitionError(f"{where}: {exc}") from exc


#: The file's field for each request field a model may refuse (others are ``parameters.*``).
_SPEC_FIELDS = {"temperature": "temperature", "max_output_tokens": "max_output_tokens",
                "max_input_tokens": "max_input_tokens"}


def _read_beside(path: Path, name: str | None, where: str) -> str:
    assert name is not None
    target = path.parent / name
    try:
        return target.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineDefinitionError(f"{where}: cannot read {target}: {exc}") from exc


def _load_module(path: Path) -> list[Pipeline]:
    """Import ``path`` under a private name; its ``Pipeline`` objects are its pipelines."""
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"docpipe_user_pipelines_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PipelineDefinitionError(f"{path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pydantic look their module up
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code may raise anything: report it with the file
        sys.modules.pop(name, None)
        raise PipelineDefinitionError(f"{path}: {exc.__class__.__name__}: {exc}") from exc
    found = [value for value in vars(module).values() if isinstance(value, Pipeline)]
    listed = getattr(module, "PIPELINES", [])
    found += [p for p in listed if isinstance(p, Pipeline) and p not in found]
    if not found:
        raise PipelineDefinitionError(f"{path}: defines no Pipeline")
    return [p if p.source != "built-in" else dataclasses.replace(p, source=str(path))
            for p in found]


def definition_files(paths: Iterable[Path]) -> list[Path]:
    """Pipeline files: each given file, and the definition files directly in each folder."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir()
                                if p.suffix in SUFFIXES and not p.name.startswith((".", "_"))))
        elif path.suffix in SUFFIXES:
            files.append(path)
        else:
            raise PipelineDefinitionError(f"{path}: not a folder or a pipeline file "
                                          f"({', '.join(SUFFIXES)})")
    return files


class Registry:
    """Built-in pipelines plus those in ``paths``, reloaded when a file changes.

    Thread-safe. Checking for changes costs one ``stat`` per file, so a worker can ask for
    its pipeline before every item.
    """

    def __init__(self, paths: Sequence[Path] = ()) -> None:
        self.paths = tuple(paths)
        self._lock = threading.Lock()
        self._stamp: tuple[tuple[str, int, int], ...] | None = None
        self._pipelines: dict[str, Pipeline] = dict(BUILTIN_PIPELINES)

    def pipelines(self) -> dict[str, Pipeline]:
        """Every pipeline by name.

        Raises:
            PipelineDefinitionError: a file is invalid, or two pipelines share a name.
        """
        if not self.paths:
            return self._pipelines
        files = definition_files(self.paths)
        stamp = tuple(_stamp(f) for f in files)
        with self._lock:
            if stamp != self._stamp:
                self._pipelines = _merge(files)
                self._stamp = stamp
            return self._pipelines

    def get(self, name: str) -> Pipeline:
        """The pipeline called ``name``.

        Raises:
            PipelineNotFound: none is; the message lists the known ones.
        """
        known = self.pipelines()
        try:
            return known[name]
        except KeyError:
            raise PipelineNotFound(f"no pipeline named {name!r} (known: "
                                   f"{', '.join(sorted(known))})") from None


def _stamp(path: Path) -> tuple[str, int, int]:
    try:
        status = path.stat()
    except OSError:
        return str(path), -1, -1
    return str(path), status.st_mtime_ns, status.st_size


def _merge(files: Sequence[Path]) -> dict[str, Pipeline]:
    merged = dict(BUILTIN_PIPELINES)
    for path in files:
        for pipeline in load_file(path):
            if pipeline.name in merged:
                other = merged[pipeline.name].source
                raise PipelineDefinitionError(
                    f"{path}: pipeline {pipeline.name!r} is already defined ({other})")
            merged[pipeline.name] = pipeline
    return merged


_registries: dict[tuple[str, ...], Registry] = {}
_registries_lock = threading.Lock()


def registry(paths: Sequence[Path | str] = ()) -> Registry:
    """The registry of ``paths`` (one per distinct list, kept for the process)."""
    key = tuple(os.fspath(p) for p in paths)
    with _registries_lock:
        found = _registries.get(key)
        if found is None:
            found = _registries[key] = Registry([Path(p) for p in key])
        return found
