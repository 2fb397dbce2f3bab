"""The decision core as a table of cases, and the properties every decision keeps."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.errors import (
    AuthenticationFailedError,
    BadOutputError,
    BudgetExhaustedError,
    CapacityUnavailableError,
    InfrastructureError,
    ItemError,
    ItemFailedError,
    ModelNotFoundError,
    PermanentAPIError,
    PipelineBrokenError,
    PipelineUnknownError,
    QuarantinedError,
    QuotaExhaustedError,
    RateLimitedError,
    RequestRefusedError,
    TransientError,
)
from workers.items.decide import (
    MAX_MESSAGE,
    Decision,
    FailWith,
    Known,
    ParkUntil,
    PauseRun,
    Policy,
    Repair,
    RetryAfter,
    Succeed,
    alone_from,
    decide,
    pause_reason_class,
)

POLICY = Policy(max_attempts=3, max_rate_limited_attempts=5, retry_base_seconds=1.0,
                retry_max_seconds=60.0)


def kind(decision: Decision) -> str:
    return type(decision).__name__


CASES: list[tuple[str, Known, str, str | None]] = [
    # (case, what is known, decision, code or message fragment)
    ("valid output", Known(None), "Succeed", None),
    ("a 429 within the cap", Known(RateLimitedError("slow down"), rate_limited=2, cooldown=7.5),
     "ParkUntil", None),
    ("a 429 at the cap", Known(RateLimitedError("slow down"), rate_limited=5), "FailWith",
     "still rate limited after 5 attempts"),
    ("a 429 on the last attempt still costs none",
     Known(RateLimitedError("slow down"), attempts=3, rate_limited=1), "ParkUntil", None),
    ("no flex capacity", Known(CapacityUnavailableError("busy"), capacity_refused=1),
     "ParkUntil", None),
    ("no flex capacity, at the cap", Known(CapacityUnavailableError("busy"), capacity_refused=5),
     "FailWith", "no flex capacity after 5 attempts"),
    ("bad output, first time", Known(BadOutputError("off schema", code="schema")), "Repair",
     None),
    ("bad output after the repair",
     Known(BadOutputError("off schema", code="schema"), attempts=2, repairing=True),
     "FailWith", "(after one repair attempt)"),
    ("bad output on the last attempt", Known(BadOutputError("refused"), attempts=3),
     "FailWith", "refused"),
    ("a 5xx", Known(TransientError("bad gateway", code="http_502")), "RetryAfter", None),
    ("a 5xx on the last attempt", Known(TransientError("bad gateway"), attempts=3),
     "FailWith", "gave up after 3 attempts"),
    ("docpipe's services failed", Known(InfrastructureError("redis went away")), "RetryAfter",
     None),
    ("docpipe's services failed, last attempt",
     Known(InfrastructureError("redis went away"), attempts=3), "FailWith", "gave up after 3"),
    ("quota", Known(QuotaExhaustedError("no credit", code="insufficient_quota"), run_id=7),
     "PauseRun", "docpipe resume 7"),
    ("a bad key", Known(AuthenticationFailedError("bad key")), "PauseRun", "OPENAI_API_KEY"),
    ("an unknown model", Known(ModelNotFoundError("no such model")), "PauseRun", None),
    ("the budget", Known(BudgetExhaustedError("over", code="budget_exhausted"), run_id=3),
     "PauseRun", "docpipe resume 3 --budget-usd"),
    ("a broken pipeline file", Known(PipelineBrokenError("bad yaml")), "PauseRun", None),
    ("a model the key cannot use", Known(ModelNotFoundError("no such model"), run_id=2,
                                         pipeline="house"),
     "PauseRun", "set the model of pipeline house to one this key can access, then "
     "`docpipe resume 2`"),
    ("the pipeline's own request refused",
     Known(RequestRefusedError("Unsupported parameter: 'reasoning.effort' is not supported "
                               "with this model.", param="reasoning.effort",
                               code="unsupported_parameter"), run_id=9, pipeline="invoices"),
     "PauseRun", "request_refused (unsupported_parameter): Unsupported parameter: "
     "'reasoning.effort' is not supported with this model. To continue: fix reasoning.effort "
     "in pipeline invoices (`docpipe pipelines show invoices` prints the request it sends), "
     "then `docpipe resume 9`."),
    ("a pipeline the workers do not know",
     Known(PipelineUnknownError("the workers have no pipeline named 'house'",
                                code="pipeline_not_found"), run_id=4),
     "PauseRun", "start the workers with DOCPIPE_PIPELINES naming the file or folder that "
     "defines the pipeline, as the CLI's did, then `docpipe resume 4`"),
    ("a 400", Known(PermanentAPIError("bad schema", code="invalid_json_schema")), "FailWith",
     "invalid_json_schema"),
    ("a poison document", Known(QuarantinedError("lost 3 times", code="worker_lost")),
     "FailWith", "worker_lost"),
    ("pipeline changed", Known(ItemFailedError("now v2", code="pipeline_changed")), "FailWith",
     "pipeline_changed"),
]


@pytest.mark.parametrize(("known", "expected", "detail"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_the_decision_table(known: Known, expected: str, detail: str | None) -> None:
    decision = decide(known, POLICY, rng=random.Random(0))
    assert kind(decision) == expected
    if detail is None:
        return
    if isinstance(decision, FailWith):
        assert detail in decision.message or detail == decision.code
    elif isinstance(decision, PauseRun):
        assert detail in decision.reason


def test_a_429_waits_as_long_as_the_fleet_cools_down() -> None:
    decision = decide(Known(RateLimitedError("slow"), rate_limited=1, cooldown=12.5), POLICY)
    assert decision == ParkUntil(12.5, decision.error)  # type: ignore[union-attr]


def test_a_retry_follows_the_servers_retry_after() -> None:
    decision = decide(Known(TransientError("busy", retry_after=4.0)), POLICY,
                      rng=random.Random(1))
    assert isinstance(decision, RetryAfter) and 4.0 <= decision.seconds <= 4.4


def test_a_failed_part_fails_its_ancestors_and_a_document_does_not() -> None:
    part = decide(Known(PermanentAPIError("no"), has_parent=True), POLICY)
    whole = decide(Known(PermanentAPIError("no")), POLICY)
    assert isinstance(part, FailWith) and part.ancestors
    assert isinstance(whole, FailWith) and not whole.ancestors


ERRORS = st.sampled_from([
    RateLimitedError, CapacityUnavailableError, TransientError, InfrastructureError,
    BadOutputError, PermanentAPIError, ItemFailedError, QuarantinedError, QuotaExhaustedError,
    AuthenticationFailedError, ModelNotFoundError, BudgetExhaustedError, PipelineBrokenError,
])
POLICIES = st.builds(Policy, max_attempts=st.integers(1, 10),
                     max_rate_limited_attempts=st.integers(1, 50),
                     retry_base_seconds=st.floats(0.01, 10),
                     retry_max_seconds=st.floats(10, 600))


@st.composite
def knowns(draw: st.DrawFn) -> Known:
    cls = draw(ERRORS)
    error: ItemError = cls(draw(st.text(max_size=3000)),
                           **({"retry_after": draw(st.none() | st.floats(0, 100))}
                              if issubclass(cls, TransientError | RateLimitedError) else {}))
    return Known(error=draw(st.none() | st.just(error)), attempts=draw(st.integers(1, 12)),
                 rate_limited=draw(st.integers(0, 60)),
                 capacity_refused=draw(st.integers(0, 60)), repairing=draw(st.booleans()),
                 cooldown=draw(st.none() | st.floats(0, 120)), has_parent=draw(st.booleans()),
                 run_id=draw(st.integers(1, 10**6)))


@given(knowns(), POLICIES)
def test_every_case_ends_in_exactly_one_bounded_decision(known: Known, policy: Policy) -> None:
    decision = decide(known, policy, rng=random.Random(0))
    assert isinstance(decision, Succeed | Repair | RetryAfter | ParkUntil | FailWith | PauseRun)
    assert (known.error is None) == isinstance(decision, Succeed)
    if isinstance(decision, RetryAfter | ParkUntil):
        assert 0 <= decision.seconds <= max(policy.retry_max_seconds, known.cooldown or 0)
    if isinstance(decision, FailWith):
        assert decision.ancestors == known.has_parent, "a failed part fails its ancestors"
        assert len(decision.message) <= MAX_MESSAGE
    if isinstance(decision, PauseRun):
        assert f"{known.error.error_class} (" in decision.reason  # type: ignore[union-attr]


@given(knowns(), POLICIES)
def test_attempts_are_bounded(known: Known, policy: Policy) -> None:
    """Past its caps an item is never sent again: only a pause (fixed by a person) or a fail."""
    past = Known(error=known.error, attempts=policy.max_attempts,
                 rate_limited=policy.max_rate_limited_attempts,
                 capacity_refused=policy.max_rate_limited_attempts,
                 repairing=known.repairing, cooldown=known.cooldown,
                 has_parent=known.has_parent, run_id=known.run_id)
    decision = decide(past, policy)
    assert not isinstance(decision, Repair | RetryAfter | ParkUntil)


@given(knowns(), POLICIES)
def test_one_repair_at_most(known: Known, policy: Policy) -> None:
    repaired = Known(error=known.error, attempts=known.attempts, repairing=True,
                     rate_limited=known.rate_limited, capacity_refused=known.capacity_refused,
                     has_parent=known.has_parent)
    assert not isinstance(decide(repaired, policy), Repair)


@given(st.integers(min_value=1, max_value=50))
def test_only_an_items_last_chance_runs_alone(max_worker_losses: int) -> None:
    # A single kill leaves its items in groups; the claim that a further loss would end in
    # quarantine is taken alone, so a poison document loses no other item then.
    alone = alone_from(max_worker_losses)
    assert 1 <= alone <= max_worker_losses
    assert alone == max_worker_losses - 1 or max_worker_losses == 1
    assert alone_from(3) == 2 and alone_from(2) == 1


def test_a_pause_reason_names_its_error_class() -> None:
    decision = decide(Known(RequestRefusedError("no", param="top_p", code="unknown_parameter"),
                            run_id=1, pipeline="p"), POLICY)
    assert isinstance(decision, PauseRun)
    assert pause_reason_class(decision.reason) == "request_refused"
    assert pause_reason_class("cancelled") is None and pause_reason_class(None) is None
    assert pause_reason_class("interrupted by Ctrl-C (docpipe run)") is None
