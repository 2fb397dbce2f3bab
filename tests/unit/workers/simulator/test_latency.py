"""The simulator's latency: a heavy tail, drawn in order or per document."""

from __future__ import annotations

import statistics

from workers.simulator import SimulatorConfig
from workers.simulator.latency import parse_latency
from workers.simulator.server import Simulator


def _simulator(per_input: bool, seed: int = 0) -> Simulator:
    median, sigma = parse_latency("500,4000")
    return Simulator(SimulatorConfig(latency_ms=median, latency_sigma=sigma, seed=seed,
                                     latency_per_input=per_input))


def test_per_input_the_same_document_meets_the_same_latency_in_any_order() -> None:
    keys = [f"doc-{i}" for i in range(200)]
    first, second = _simulator(True), _simulator(True)
    forward = {key: first.latency_ms(key) for key in keys}
    backward = {key: second.latency_ms(key) for key in reversed(keys)}
    assert forward == backward
    assert len(set(forward.values())) == len(keys)
    # Still the configured distribution: median 500 ms, a tail reaching past 2 s.
    assert 400 < statistics.median(forward.values()) < 625
    assert max(forward.values()) > 2000
    assert _simulator(True, seed=1).latency_ms("doc-0") != forward["doc-0"]


def test_in_order_the_latency_follows_the_requests_not_the_documents() -> None:
    simulator = _simulator(False)
    assert simulator.latency_ms("doc-0") != simulator.latency_ms("doc-0")
