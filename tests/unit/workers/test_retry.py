from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.admission.backoff import backoff_delay, retry_delay

attempts = st.integers(min_value=1, max_value=200)
bases = st.floats(min_value=0.001, max_value=10)
caps = st.floats(min_value=0.01, max_value=600)


class TestBackoff:
    @given(attempts, bases, caps, st.integers())
    def test_full_jitter_stays_within_zero_and_the_capped_exponential(
        self, attempt: int, base: float, cap: float, seed: int
    ) -> None:
        delay = backoff_delay(attempt, base=base, cap=cap, rng=random.Random(seed))
        assert 0.0 <= delay <= min(cap, base * 2 ** (attempt - 1))

    def test_spreads_retries_out(self) -> None:
        rng = random.Random(1)
        delays = {round(backoff_delay(6, base=1, cap=60, rng=rng), 3) for _ in range(50)}
        assert len(delays) > 40

    def test_attempt_starts_at_one(self) -> None:
        with pytest.raises(ValueError):
            backoff_delay(0, base=1, cap=2)


class TestRetryDelay:
    @given(attempts, bases, caps, st.floats(min_value=0.001, max_value=10_000), st.integers())
    def test_honours_the_server_wait_but_never_passes_the_cap(
        self, attempt: int, base: float, cap: float, retry_after: float, seed: int
    ) -> None:
        delay = retry_delay(attempt, base=base, cap=cap, retry_after=retry_after,
                            rng=random.Random(seed))
        assert delay <= cap
        assert delay >= min(cap, retry_after)

    def test_without_a_server_wait_it_is_backoff(self) -> None:
        assert retry_delay(1, base=1, cap=10, retry_after=None, rng=random.Random(0)) <= 1
