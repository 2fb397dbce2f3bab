"""The simulator's checks of a request's parameters give the real API's verdicts."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines import SUMMARISE
from tests.support.requests import CASES, Verdict, changed
from workers.simulator.requests import refusal

BODY: dict[str, Any] = SUMMARISE.request("An invoice from ACME for 120 EUR.")


@pytest.mark.parametrize(("changes", "verdict"), [(c.changes, c.verdict) for c in CASES],
                         ids=[c.name for c in CASES])
def test_each_request_gets_the_api_verdict(changes: dict[str, Any],
                                           verdict: Verdict | None) -> None:
    refused = refusal(changed(BODY, changes))
    found = None if refused is None else Verdict(refused.status, str(refused.code),
                                                 refused.param)
    assert found == verdict, refused and refused.message


def test_the_messages_are_the_apis() -> None:
    def message(changes: dict[str, Any]) -> str:
        refused = refusal(changed(BODY, changes))
        assert refused is not None
        return refused.message

    assert message({"model": "o4-mini", "temperature": 0.2}) == \
        "Unsupported parameter: 'temperature' is not supported with this model."
    assert message({"model": "gpt-4.1", "reasoning": {"effort": "low"}}) == \
        "Unsupported parameter: 'reasoning.effort' is not supported with this model."
    assert message({"model": "gpt-5.1-codex", "reasoning": {"effort": "none"}}) == (
        "Unsupported value: 'none' is not supported with the 'gpt-5.1-codex' model. "
        "Supported values are: 'low', 'medium', and 'high'.")
    assert message({"foo": 1}) == "Unknown parameter: 'foo'."
    assert message({"metadata": {"batch": 7}}) == \
        "Invalid type for 'metadata.batch': expected a string, but got an integer instead."
