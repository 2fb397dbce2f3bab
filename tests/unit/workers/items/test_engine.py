"""The engine's slots (what a claim may take, and when) and its wire (what is sent, and when)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from workers.errors import AuthenticationFailedError
from workers.items.engine import Engine, Halted, Voided, halts
from workers.llm.client import CallResult


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = Engine(lambda: None, in_flight=8)  # type: ignore[arg-type, return-value]
    yield engine
    engine.close()


def test_a_claim_takes_what_is_free_once_enough_is(engine: Engine) -> None:
    assert engine.take(16) == 8  # never more than the engine has
    engine.give_back(3)
    assert engine.take(16, at_least=2) == 3
    taken: list[int] = []
    waiter = threading.Thread(target=lambda: taken.append(engine.take(16, at_least=2)))
    waiter.start()
    engine.give_back(1)
    time.sleep(0.05)
    assert not taken, "one free slot is not enough"
    engine.give_back(1)
    waiter.join(10)
    assert taken == [2]


def test_held_back_claims_wait_until_the_hold_or_their_own_bound(engine: Engine) -> None:
    engine.hold_back(30)
    assert 29 < engine.held_back() <= 30
    started = time.monotonic()
    # A claim bounded to 0.3 s goes ahead then, held back or not.
    assert engine.take(2, held_until=time.monotonic() + 0.3) == 2
    assert time.monotonic() - started >= 0.29
    # One that is not bound by a hold (a suspect's) goes at once.
    assert engine.take(1) == 1
    engine.give_back(3)
    engine.hold_back(0.2)  # a shorter hold does not shorten the longer one
    assert engine.held_back() > 29


def test_a_hold_that_ends_lets_the_waiting_claim_go(engine: Engine) -> None:
    engine.hold_back(0.3)
    started = time.monotonic()
    assert engine.take(8, held_until=time.monotonic() + 60) == 8
    assert 0.29 <= time.monotonic() - started < 30


def test_settled_calls_release_a_hold_at_once(engine: Engine) -> None:
    # The hold was computed from reservations; once calls settle, what they over-reserved is
    # back, and the waiting claim asks admission again instead of waiting it out.
    engine.hold_back(30)
    taken: list[int] = []
    waiter = threading.Thread(target=lambda: taken.append(
        engine.take(2, held_until=time.monotonic() + 60)))
    waiter.start()
    time.sleep(0.05)
    assert not taken
    engine.release_hold()
    waiter.join(10)
    assert taken == [2] and engine.held_back() == 0


def test_claims_take_freed_slots_in_the_order_they_came(engine: Engine) -> None:
    # Each freed pair of slots goes to the claim that has waited longest, not to whichever
    # thread wins the race: a message received early is not left to start last.
    assert engine.take(8) == 8
    order: list[int] = []
    waiters = []
    for n in range(4):
        waiter = threading.Thread(target=lambda n=n: order.append(n) if engine.take(
            2, at_least=2) else None)
        waiter.start()
        waiters.append(waiter)
        # In line before the next one comes.
        deadline = time.monotonic() + 10
        while len(engine._line) < n + 1 and time.monotonic() < deadline:
            time.sleep(0.005)
    for n in range(4):
        engine.give_back(2)
        waiters[n].join(10)
        assert order == list(range(n + 1))


class _Gate:
    """A client whose calls last until the test lets them end, counting those on the wire;
    a body with ``"fail": True`` is answered with a bad key (a run-wide error)."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.on_the_wire = 0
        self.most = 0
        self.go: dict[str, threading.Event] = {}

    async def create(self, body: dict[str, Any]) -> CallResult:
        name = body["input"]
        self.go.setdefault(name, threading.Event())
        self.started.append(name)
        self.on_the_wire += 1
        self.most = max(self.most, self.on_the_wire)
        while not self.go[name].is_set():
            await asyncio.sleep(0.005)
        self.on_the_wire -= 1
        error = AuthenticationFailedError("bad key", code="invalid_api_key") \
            if body.get("fail") else None
        return CallResult(model="m", started_at=datetime.now(UTC), latency_ms=1,
                          output_text=name, error=error)

    def let_go(self, *names: str) -> None:
        for name in names:
            self.go.setdefault(name, threading.Event()).set()

    def wait_started(self, count: int) -> list[str]:
        deadline = time.monotonic() + 10
        while len(self.started) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        return list(self.started)

    async def close(self) -> None:
        pass


def _gated(in_flight: int, ahead: int) -> tuple[_Gate, Engine]:
    gate = _Gate()
    return gate, Engine(lambda: gate, in_flight=in_flight,  # type: ignore[arg-type, return-value]
                        ahead=ahead)


def _text(result: object) -> str | None:
    assert isinstance(result, CallResult)
    return result.output_text


def test_calls_claimed_ahead_wait_for_the_wire_and_take_it_as_a_call_ends() -> None:
    gate, engine = _gated(in_flight=2, ahead=2)
    try:
        assert engine.slots == 4 and engine.take(8) == 4
        futures = [engine.call({"input": f"c{n}"}) for n in range(4)]
        assert gate.wait_started(2) == ["c0", "c1"]
        time.sleep(0.05)
        assert gate.started == ["c0", "c1"], "two on the wire, two waiting ready"
        gate.let_go("c0")
        assert _text(futures[0].result(10)) == "c0"
        assert gate.wait_started(3) == ["c0", "c1", "c2"], "the wire taken as a call ended"
        gate.let_go("c1", "c2", "c3")
        assert [_text(f.result(10)) for f in futures] == ["c0", "c1", "c2", "c3"]
        assert gate.most == 2
    finally:
        engine.close()


def test_a_run_wide_error_keeps_the_runs_waiting_calls_off_the_wire() -> None:
    # A bad key answered for run 1: its calls claimed before the pause is written are not
    # sent; run 2's are, and so are run 1's claimed after the pause was written (a resume).
    gate, engine = _gated(in_flight=1, ahead=3)
    try:
        claimed = time.monotonic()
        failing = engine.call({"input": "a", "fail": True}, run_id=1, claimed_at=claimed)
        assert gate.wait_started(1) == ["a"]
        same_run = engine.call({"input": "b"}, run_id=1, claimed_at=claimed)
        other_run = engine.call({"input": "c"}, run_id=2, claimed_at=claimed)
        gate.let_go("a", "c")
        assert halts(failing.result(10))
        assert same_run.result(10) == Voided(Halted(1))
        assert _text(other_run.result(10)) == "c"
        engine.halt_written(1)
        resumed = engine.call({"input": "d"}, run_id=1, claimed_at=time.monotonic())
        late = engine.call({"input": "e"}, run_id=1, claimed_at=claimed)
        gate.let_go("d", "e")
        assert _text(resumed.result(10)) == "d"
        assert late.result(10) == Voided(Halted(1))
        assert gate.started == ["a", "c", "d"]
    finally:
        engine.close()
