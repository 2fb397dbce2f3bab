"""docpipe's lint and the simulator's validator: two implementations of strict mode, held
to the same verdicts by one corpus."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines import EXTRACT, SUMMARISE
from pipelines.schema import strict_violations
from tests.support.schemas import CORPUS
from workers.simulator.strict import first_violation


@pytest.mark.parametrize(("schema", "accepted"), [(s, ok) for _, s, ok in CORPUS],
                         ids=[name for name, _, _ in CORPUS])
def test_both_give_the_api_verdict(schema: dict[str, Any], accepted: bool) -> None:
    lint = strict_violations(schema)
    simulator = first_violation(schema)
    assert (lint == []) is accepted, lint
    assert (simulator is None) is accepted, simulator


def test_the_builtin_pipelines_pass_both() -> None:
    for pipeline in (SUMMARISE, EXTRACT):
        assert strict_violations(pipeline.schema) == [] and first_violation(pipeline.schema) \
            is None


def test_the_simulator_words_a_violation_as_the_api_does() -> None:
    schema = {"type": "object", "properties": {"decisions": {"type": "array", "items": {
        "type": "object", "properties": {"id": {"type": "string"}}, "required": [],
        "additionalProperties": False}}}, "required": ["decisions"],
        "additionalProperties": False}
    found = first_violation(schema)
    assert found is not None
    assert found.message("X") == (
        "Invalid schema for response_format 'X': In context=('properties', 'decisions', "
        "'items'), 'required' is required to be supplied and to be an array including every "
        "key in properties. Missing 'id'.")
