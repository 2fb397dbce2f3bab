from __future__ import annotations

import pytest

from tests.support.requests import CASES, Verdict
from workers.errors import (
    ModelNotFoundError,
    PauseRunError,
    PermanentAPIError,
    RequestRefusedError,
)
from workers.llm.errors import classify_status, is_quota_code, parse_duration, parse_retry_after


@pytest.mark.parametrize(("text", "seconds"), [
    ("1s", 1.0), ("6m0s", 360.0), ("12ms", 0.012), ("51.189s", 51.189), ("1h2m3s", 3723.0),
    ("250us", 0.00025),
])
def test_parse_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "5", "1x", None])
def test_bad_durations_are_none(text: str | None) -> None:
    assert parse_duration(text) is None


def test_retry_after_prefers_milliseconds() -> None:
    assert parse_retry_after({"retry-after-ms": "45190", "retry-after": "46"}) == 45.19
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_quota_codes() -> None:
    for code in ("insufficient_quota", "credit_balance_exhausted",
                 "project_spend_limit_exceeded", "organization_usage_limit_exceeded",
                 "some_new_spend_limit_exceeded"):
        assert is_quota_code(code)
    assert not is_quota_code("rate_limit_exceeded")
    assert not is_quota_code(None)


@pytest.mark.parametrize("status", [404, 400])
def test_model_not_found_by_its_code_whatever_the_status(status: int) -> None:
    error = classify_status(status, code="model_not_found", kind="invalid_request_error",
                            message="The requested model 'gpt-nope' does not exist.")
    assert isinstance(error, ModelNotFoundError) and error.code == "model_not_found"
    assert isinstance(classify_status(400, code="invalid_value", kind=None, message="x"),
                      PermanentAPIError)


_PIPELINE_REFUSALS = [c for c in CASES if c.verdict is not None and c.verdict.status == 400
                      and not str(c.verdict.param).startswith("input")]


@pytest.mark.parametrize("verdict", [c.verdict for c in _PIPELINE_REFUSALS],
                         ids=[c.name for c in _PIPELINE_REFUSALS])
def test_a_400_for_the_pipelines_own_request_pauses_the_run(verdict: Verdict) -> None:
    error = classify_status(verdict.status, code=verdict.code, kind="invalid_request_error",
                            message="refused", param=verdict.param)
    assert isinstance(error, RequestRefusedError), error
    assert isinstance(error, PauseRunError) and error.param == verdict.param
    assert error.code == verdict.code


@pytest.mark.parametrize(("code", "param"), [
    ("context_length_exceeded", "input"),
    ("invalid_image_format", "input[0].content[1].image_url"),
    ("invalid_value", "input[0].role"),
    ("invalid_prompt", None),
    (None, None),
])
def test_a_400_for_the_document_fails_only_its_item(code: str | None,
                                                    param: str | None) -> None:
    error = classify_status(400, code=code, kind="invalid_request_error", message="refused",
                            param=param)
    assert type(error) is PermanentAPIError
