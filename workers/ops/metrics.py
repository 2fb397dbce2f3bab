"""Prometheus metrics: what Flower cannot say (tokens, dollars, 429s, limiter waits, depth).

Call metrics are recorded in the process that made the call. With the prefork pool that is a
pool child, so a worker started with ``DOCPIPE_METRICS_PORT`` runs prometheus-client in
multiprocess mode: ``docpipe worker`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder
before anything imports prometheus-client, each process writes its own files there, and the
worker's main process serves their sum.

Fleet gauges (items by status, queue depth) are read at scrape time from the database and the
broker by :class:`FleetCollector`. Every worker serves the same values; dashboards take
``max`` over instances.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from workers.admission.scripts import redis_client
from workers.db import repository as repo
from workers.db.models import AttemptOutcome
from workers.db.session import session_scope

log = logging.getLogger("docpipe.metrics")

#: Read by prometheus-client once, at import: ``docpipe worker`` sets it before.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Call latencies: the API answers in 0.3 s to minutes (long outputs, reasoning, flex).
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5)

CALLS = Counter(
    "docpipe_calls", "Model API calls, by model, outcome (ok or error) and error class.",
    ["model", "outcome", "error_class"])
CALL_LATENCY = Histogram(
    "docpipe_call_duration_seconds", "Model API call latency, answered or not.", ["model"],
    buckets=LATENCY_BUCKETS)
TOKENS = Counter(
    "docpipe_tokens", "Tokens billed, by kind: input (cached included), cached, output, "
    "reasoning (included in output).", ["model", "kind"])
COST = Counter("docpipe_cost_usd", "Dollars spent on calls, at each call's tier price.",
               ["model", "tier"])
RATE_LIMITED = Counter(
    "docpipe_http_429", "429 answers, by kind: rate_limited (the account's limits) or "
    "capacity (flex capacity).", ["model", "kind"])
IN_FLIGHT = Gauge("docpipe_calls_in_flight", "Calls waiting for the API now.", ["model"],
                  multiprocess_mode="livesum")
LIMITER_WAIT = Histogram(
    "docpipe_limiter_wait_seconds", "Time an admitted call waited for rate-limit budget.",
    buckets=WAIT_BUCKETS)
PARKED = Counter(
    "docpipe_items_parked", "Items put back to wait for longer than an inline wait, by reason: "
    "budget (rate limits) or circuit_open; or unsent because a call of their run met a "
    "run-wide error: run_paused.", ["reason"])
OUTCOMES = Counter(
    "docpipe_item_deliveries", "Item deliveries handled, by queue and outcome (succeeded, "
    "reused, failed, retry, waiting, paused, skipped).", ["queue", "outcome"])


def record_call(attempt: repo.AttemptRecord, *, tier: str) -> None:
    """Count one finished model call: outcome, latency, tokens and dollars."""
    model = attempt.model
    error_class = None if attempt.outcome == AttemptOutcome.OK else attempt.outcome
    CALLS.labels(model, "ok" if error_class is None else "error", error_class or "").inc()
    CALL_LATENCY.labels(model).observe(attempt.latency_ms / 1000)
    for kind, count in (("input", attempt.input_tokens), ("cached", attempt.cached_tokens),
                        ("output", attempt.output_tokens),
                        ("reasoning", attempt.reasoning_tokens)):
        if count:
            TOKENS.labels(model, kind).inc(count)
    if attempt.cost_usd:
        COST.labels(model, tier).inc(float(attempt.cost_usd))
    if attempt.http_status == 429:
        RATE_LIMITED.labels(model, "capacity" if error_class == "capacity"
                            else "rate_limited").inc()


def record_admission(waited_seconds: float) -> None:
    """An admitted call's inline wait for budget (0 when there was budget)."""
    LIMITER_WAIT.observe(waited_seconds)


def record_parked(reason: str) -> None:
    """An item parked for a long wait (budget or an open circuit)."""
    PARKED.labels(reason).inc()


def record_outcome(queue: str, outcome: str) -> None:
    """One delivery of an item, and what came of it."""
    OUTCOMES.labels(queue, outcome).inc()


class FleetCollector(Collector):
    """Gauges read at scrape time: items of unfinished runs by status, queue depth."""

    def __init__(self, *, queues: Sequence[str], broker_url: str) -> None:
        self._queues = list(queues)
        self._broker_url = broker_url

    def collect(self) -> Iterator[Metric]:
        items = GaugeMetricFamily(
            "docpipe_items", "Items of unfinished runs, by status.", labels=["status"])
        runs = GaugeMetricFamily("docpipe_runs", "Runs by status.", labels=["status"])
        try:
            by_item, by_run = _database_counts()
        except Exception as exc:  # a scrape must not fail because the database is away
            log.warning("metrics: cannot read the database: %s", exc)
        else:
            for status, count in sorted(by_item.items()):
                items.add_metric([status], count)
            for status, count in sorted(by_run.items()):
                runs.add_metric([status], count)
        yield items
        yield runs
        depth = GaugeMetricFamily(
            "docpipe_queue_depth", "Messages waiting in each broker queue (Flower's /metrics "
            "has no queue depth).", labels=["queue"])
        unacked = GaugeMetricFamily(
            "docpipe_queue_unacked", "Messages delivered to workers and not yet acknowledged "
            "(or held for a countdown).")
        try:
            lengths, held = _broker_counts(self._broker_url, self._queues)
        except Exception as exc:
            log.warning("metrics: cannot read the broker: %s", exc)
        else:
            for queue, length in lengths.items():
                depth.add_metric([queue], length)
            unacked.add_metric([], held)
        yield depth
        yield unacked


def _database_counts() -> tuple[dict[str, int], dict[str, int]]:
    with session_scope() as session:
        return repo.open_item_counts(session), repo.run_counts(session)


def _broker_counts(broker_url: str, queues: Sequence[str]) -> tuple[dict[str, int], int]:
    client = redis_client(broker_url)
    with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.llen(queue)
        pipe.hlen("unacked")
        *lengths, held = pipe.execute()
    return {q: int(n) for q, n in zip(queues, lengths, strict=True)}, int(held)


def multiprocess_dir() -> str | None:
    """The folder prometheus-client writes to in this process, or None (one process)."""
    return os.environ.get(MULTIPROC_ENV) or None


def serve(*, port: int, address: str, queues: Sequence[str], broker_url: str) -> Any:
    """Serve ``/metrics`` from this process; return the server (``shutdown()`` stops it)."""
    registry = CollectorRegistry()
    path = multiprocess_dir()
    if path is not None:
        multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    registry.register(FleetCollector(queues=queues, broker_url=broker_url))
    server, _ = start_http_server(port, addr=address, registry=registry)
    log.info("metrics on http://%s:%s/metrics", address or "0.0.0.0", port)
    return server


def process_exited(pid: int) -> None:
    """Drop a dead pool process's live gauges (its counters stay in the sum)."""
    path = multiprocess_dir()
    if path is not None:
        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
