"""The liveness check: restart only a worker that has work, room, and receives nothing."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from workers.runtime.liveness import Activity, LivenessCheck, Probe, crash_restart_delay


@dataclass
class FakeWorker:
    backlog: int | None = 0
    active: int = 0


def check_for(worker: FakeWorker, activity: Activity, *, window: float = 10,
              concurrency: int = 4) -> LivenessCheck:
    return LivenessCheck(window=window, concurrency=concurrency, activity=activity,
                         probe=Probe(backlog=lambda: worker.backlog, active=lambda: worker.active))


def test_work_waiting_with_free_slots_and_nothing_received_for_a_window_is_a_stall() -> None:
    worker, activity = FakeWorker(backlog=5), Activity(last_received=0.0)
    check = check_for(worker, activity)
    assert not check.stalled(now=100.0)
    assert not check.stalled(now=109.0)
    assert check.stalled(now=110.0)


def test_a_received_message_restarts_the_window() -> None:
    worker, activity = FakeWorker(backlog=5), Activity(last_received=0.0)
    check = check_for(worker, activity)
    assert not check.stalled(now=100.0)
    activity.last_received = 108.0
    assert not check.stalled(now=115.0)
    assert check.stalled(now=118.0)


def test_a_busy_worker_an_empty_queue_or_an_unreachable_broker_is_never_stalled() -> None:
    activity = Activity(last_received=0.0)
    for worker in (FakeWorker(backlog=50, active=4), FakeWorker(backlog=0),
                   FakeWorker(backlog=None)):
        check = check_for(worker, activity)
        assert not any(check.stalled(now=t) for t in range(0, 1000, 5))


def test_an_interruption_of_the_starvation_resets_the_clock() -> None:
    worker, activity = FakeWorker(backlog=5), Activity(last_received=0.0)
    check = check_for(worker, activity)
    assert not check.stalled(now=100.0)
    worker.backlog = None  # the broker went away for a moment
    assert not check.stalled(now=105.0)
    worker.backlog = 5
    assert not check.stalled(now=106.0)
    assert not check.stalled(now=115.0)
    assert check.stalled(now=116.0)


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4), st.booleans()), max_size=60))
def test_never_stalled_before_a_whole_window_of_uninterrupted_starvation(
        steps: list[tuple[int, int, bool]]) -> None:
    worker, activity = FakeWorker(), Activity(last_received=0.0)
    check = check_for(worker, activity, window=10, concurrency=4)
    starved_for = 0.0
    for now, (backlog, active, received) in enumerate(steps, start=1):
        worker.backlog, worker.active = backlog, active
        if received:
            activity.last_received = float(now)
        starved = backlog > 0 and active < 4
        starved_for = starved_for + 1 if starved and not received else 0.0
        if check.stalled(now=float(now)):
            assert starved and starved_for >= 10


class TestCrashRestart:
    def test_only_a_worker_that_was_running_and_failed_is_restarted(self) -> None:
        for code in (0, None):
            assert crash_restart_delay(code, ready=True, last_restart=None, previous_delay=0,
                                       now=1000.0) is None
        assert crash_restart_delay(1, ready=False, last_restart=None, previous_delay=0,
                                   now=1000.0) is None, "a worker that never started exits"
        assert crash_restart_delay(1, ready=True, last_restart=None, previous_delay=0,
                                   now=1000.0) == 1.0

    def test_a_crash_loop_backs_off_to_a_minute_and_a_stable_worker_starts_afresh(self) -> None:
        delay, last, delays = 0.0, None, []
        now = 1000.0
        for _ in range(10):
            step = crash_restart_delay(1, ready=True, last_restart=last, previous_delay=delay,
                                       now=now)
            assert step is not None
            delays.append(step)
            delay, last, now = step, now, now + step + 5
        assert delays[:4] == [1.0, 2.0, 4.0, 8.0] and delays[-1] == 60.0
        assert crash_restart_delay(1, ready=True, last_restart=last, previous_delay=60,
                                   now=now + 3600) == 1.0
