"""A group of items through the engine, against the simulator, Redis and both databases."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import func, select, update

from pipelines import get_pipeline
from tests.support.db import new_run
from tests.support.services import SimulatorProcess
from tests.support.waiting import wait_until
from workers.admission.breaker import CircuitBreaker
from workers.admission.limiter import RateLimiter
from workers.admission.throttle import Throttle
from workers.db import repository as repo
from workers.db.models import Attempt, AttemptOutcome, Item, ItemStatus, Result, Run, RunStatus
from workers.db.session import session_scope
from workers.items.engine import Engine
from workers.items.group import process_items
from workers.llm.client import AsyncResponsesClient
from workers.settings import Settings, get_settings


@pytest.fixture
def settings(migrated_db: str, broker_url: str, simulator: SimulatorProcess,
             configure: Any) -> Settings:
    configure(openai_base_url=simulator.base_url, openai_api_key="sk-group",
              broker_url=broker_url, retry_base_seconds=0.05, retry_max_seconds=0.2)
    return get_settings()


@pytest.fixture
def engine(simulator: SimulatorProcess) -> Iterator[Engine]:
    engine = Engine(lambda: AsyncResponsesClient(api_key="sk-group",
                                                 base_url=simulator.base_url, timeout=10),
                    in_flight=8)
    yield engine
    engine.close()


def run_group(ids: list[int], settings: Settings, engine: Engine) -> dict[int, Any]:
    client = redis.Redis.from_url(settings.effective_broker_url)
    throttle = Throttle(settings, RateLimiter(client), CircuitBreaker(client))
    # The task returns once the calls are sent; the writer writes the answers after.
    return process_items(ids, settings=settings, engine=engine, throttle=throttle).wait(60)


def in_flight() -> int:
    """Attempt rows of calls not answered yet."""
    with session_scope() as s:
        return int(s.scalar(select(func.count()).select_from(Attempt).where(
            Attempt.outcome == AttemptOutcome.IN_FLIGHT)) or 0)


def texts(n: int) -> list[str]:
    return [f"Document {i} of the group, about the harbour's {i} cranes." for i in range(n)]


def test_a_group_larger_than_the_engine_is_answered_once_per_item(
        settings: Settings, engine: Engine, simulator: SimulatorProcess) -> None:
    run_id, ids = new_run(texts(20), version=get_pipeline("summarise").version)
    outcomes = run_group(ids, settings, engine)
    assert {o.status for o in outcomes.values()} == {"succeeded"} and set(outcomes) == set(ids)
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Attempt)) == 20
        assert s.scalar(select(func.count()).select_from(Attempt).where(
            Attempt.outcome != AttemptOutcome.OK)) == 0
        assert s.scalar(select(func.count()).select_from(Result)) == 20
        run = s.get(Run, run_id)
        assert run is not None and run.status == RunStatus.FINISHED
    assert simulator.stats()["counters"]["requests"] == 20
    assert engine._free == engine.in_flight, "every slot is given back"


def test_every_attempt_row_is_written_before_its_call_is_answered(
        settings: Settings, engine: Engine, simulator: SimulatorProcess) -> None:
    simulator.configure(latency_ms=1500, latency_sigma=0.0)
    _, ids = new_run(texts(6), version=get_pipeline("summarise").version)
    done: dict[int, Any] = {}
    thread = threading.Thread(target=lambda: done.update(run_group(ids, settings, engine)))
    thread.start()

    # All six rows exist together while the calls are out (each takes 1.5 s).
    wait_until(lambda: in_flight() == 6, timeout=20, interval=0.05, what="six in-flight rows")
    assert simulator.stats()["counters"].get("status_200", 0) == 0
    thread.join(30)
    assert {o.status for o in done.values()} == {"succeeded"}
    assert in_flight() == 0


def test_answers_that_come_back_after_a_take_over_are_kept_as_attempts_only(
        settings: Settings, engine: Engine, simulator: SimulatorProcess) -> None:
    # This process's calls are out when the sweep finds it dead (it was stopped past its
    # heartbeat) and another worker claims the items again. The answers it paid for are
    # recorded, and nothing else: no result, no status, the new holder's claim untouched.
    simulator.configure(latency_ms=1500, latency_sigma=0.0)
    _, ids = new_run(texts(4), version=get_pipeline("summarise").version)
    done: dict[int, Any] = {}
    thread = threading.Thread(target=lambda: done.update(run_group(ids, settings, engine)))
    thread.start()

    wait_until(lambda: in_flight() == 4, timeout=20, interval=0.05, what="four calls out")
    with session_scope() as s:
        assert repo.void_dead_claims(s, ids) == ids
    with session_scope() as s:
        for item_id in ids:  # each now a suspect (one lost worker): claimed alone
            assert repo.claim_item(s, item_id, lease_seconds=600, holder="the new holder")
    thread.join(30)
    assert {o.status for o in done.values()} == {"skipped"}
    with session_scope() as s:
        items = s.scalars(select(Item).where(Item.id.in_(ids))).all()
        assert {(i.status, i.holder, i.result_id) for i in items} == {
            (ItemStatus.RUNNING, "the new holder", None)}
        assert s.scalar(select(func.count()).select_from(Result)) == 0
        attempts = s.scalars(select(Attempt)).all()
        # Paid for, so on record with their usage, though the sweep had called them lost.
        assert len(attempts) == 4 and {a.outcome for a in attempts} == {AttemptOutcome.OK}
        assert all(a.input_tokens > 0 and a.cost_usd > 0 for a in attempts)


def test_ids_given_twice_or_already_done_are_processed_once(
        settings: Settings, engine: Engine, simulator: SimulatorProcess) -> None:
    _, ids = new_run(texts(4), version=get_pipeline("summarise").version)
    first = run_group(ids + ids[:2], settings, engine)
    again = run_group(ids, settings, engine)
    assert {o.status for o in first.values()} == {"succeeded"}
    assert {o.status for o in again.values()} == {"skipped"}
    assert simulator.stats()["counters"]["requests"] == 4


def test_a_suspect_is_left_out_of_the_group_and_runs_alone(
        settings: Settings, engine: Engine, simulator: SimulatorProcess) -> None:
    # With the default three losses to quarantine, an item lost twice is on its last chance
    # and runs alone, after the group; one lost once goes with the group.
    assert settings.max_worker_losses == 3
    _, ids = new_run(texts(5), version=get_pipeline("summarise").version)
    with session_scope() as s:
        s.execute(update(Item).where(Item.id == ids[2]).values(worker_losses=2))
        s.execute(update(Item).where(Item.id == ids[3]).values(worker_losses=1))
    outcomes = run_group(ids, settings, engine)
    assert {o.status for o in outcomes.values()} == {"succeeded"}
    with session_scope() as s:
        suspect = s.get(Item, ids[2])
        assert suspect is not None and suspect.status == ItemStatus.SUCCEEDED
        assert suspect.worker_losses == 2
        # The group's calls were all made before the suspect's.
        order = list(s.scalars(select(Attempt.item_id).order_by(Attempt.id)))
    assert order[-1] == ids[2] and set(order[:-1]) == set(ids) - {ids[2]}


def test_answers_the_decision_core_retries_or_fails_are_written_per_item(
        settings: Settings, engine: Engine, simulator: SimulatorProcess) -> None:
    # Every call fails with a 500: each item is released for a retry, none is lost or
    # left running, and every call made has its row with the error.
    simulator.configure(error_rate=1.0)
    _, ids = new_run(texts(6), version=get_pipeline("summarise").version)
    outcomes = run_group(ids, settings, engine)
    assert {o.status for o in outcomes.values()} == {"retry"}
    with session_scope() as s:
        items = s.scalars(select(Item).where(Item.id.in_(ids))).all()
        assert {i.status for i in items} == {ItemStatus.RETRY}
        assert all(i.lease_expires_at is None for i in items)
        attempts = s.scalars(select(Attempt)).all()
        assert len(attempts) == simulator.stats()["counters"]["requests"] == 6
        assert {a.outcome for a in attempts} == {"transient"}


def test_calls_that_waited_for_the_budget_to_be_learned_reserve_no_further_ahead_than_others(
        settings: Settings, engine: Engine, simulator: SimulatorProcess, configure: Any) -> None:
    # Nobody configured the budget: the group's first call probes the API, the others wait
    # for its headers. They then reserve slots as any call does, at most the inline wait
    # ahead, and park the rest: reserving up to the probe's deadline would promise the
    # next minutes to them at once, at the estimates' pace, and park every later claim.
    simulator.configure(rpm=60, tpm=10**9)  # a call a second, a burst of one
    configure(max_inline_wait_seconds=2.0)
    settings = get_settings()
    assert settings.request_timeout_seconds > 60, "the probe's deadline is far away"
    _, ids = new_run(texts(8), version=get_pipeline("summarise").version)
    outcomes = run_group(ids, settings, engine)

    statuses = [o.status for o in outcomes.values()]
    assert statuses.count("waiting") >= 2, statuses
    assert set(statuses) <= {"succeeded", "waiting"}
    with session_scope() as s:
        calls = sorted(s.execute(select(Attempt.started_at, Attempt.latency_ms)).all())
        parked = s.scalars(select(Item).where(Item.status == ItemStatus.RETRY)).all()
    assert len(calls) + len(parked) == 8 == len(ids)
    assert all(item.not_before is not None for item in parked)
    probe_answered = calls[0][0] + timedelta(milliseconds=calls[0][1])
    # The burst's one call at once, then one a second, for at most the inline wait (2 s);
    # a second more for a loaded machine (the old reservations spread over 7 s).
    latest = max(started for started, _ in calls)
    assert (latest - probe_answered).total_seconds() <= 2.0 + 1.0
