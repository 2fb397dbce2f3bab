"""The engine's slots: what a claim may take, and when."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from workers.items.engine import Engine


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
