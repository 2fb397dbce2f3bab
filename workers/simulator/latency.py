"""The simulator's latency: a log-normal tail given as its median and 99th percentile."""

from __future__ import annotations

import math
import random


def parse_latency(value: str) -> tuple[float, float]:
    """``"500"`` or ``"500,4000"`` (median, p99 in ms) to (median, log-normal sigma)."""
    median_text, _, p99_text = value.partition(",")
    median = float(median_text)
    if not p99_text:
        return median, 0.5
    p99 = float(p99_text)
    if median <= 0 or p99 < median:
        raise ValueError("latency must be MEDIAN or MEDIAN,P99 with P99 >= MEDIAN > 0")
    return median, math.log(p99 / median) / 2.3263  # z of the 99th percentile


def draw_ms(median: float, sigma: float, rng: random.Random) -> float:
    """One latency in ms, log-normal around ``median`` (0 when the median is)."""
    return median * math.exp(rng.gauss(0.0, sigma)) if median > 0 else 0.0
