"""Live, flex and batch: the same run at the three service tiers, and what each cost.

Runs ``--docs`` memos through ``--pipeline`` three times, each on a fresh database and
simulator with the same seed (so the answers, and their tokens, are the same):

- **live**: workers call ``/v1/responses`` at the standard tier;
- **flex**: the same calls with ``service_tier: "flex"``; the simulator refuses
  ``--flex-unavailable`` of them with 429 Resource Unavailable, which docpipe retries;
- **batch**: beat sends JSONL files to ``/v1/batches`` and collects them.

Every figure comes from the attempts recorded in the database: tokens as the simulator
reported them, dollars from the price table at each tier.

    python bench/modes.py --docs 10000 --record
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from corpus import write_corpus  # noqa: E402
from record import describe_machine, emit  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from stack import bench_stack, wait_finished  # noqa: E402

from workers.db.models import Attempt, AttemptOutcome, Batch  # noqa: E402
from workers.db.session import session_scope  # noqa: E402


@dataclass
class Measured:
    mode: str
    seconds: float
    calls: int
    refused: int
    input_tokens: int
    output_tokens: int
    usd: Decimal
    batches: int


def run_mode(mode: str, work: Path, corpus: Path, args: argparse.Namespace) -> Measured:
    """Run the corpus in one mode on a fresh stack; measure it from the attempts."""
    folder = work / mode
    folder.mkdir()
    settings = {"DOCPIPE_BATCH_POLL_SECONDS": "2"}
    with bench_stack(folder, latency_ms=args.latency_ms, concurrency=args.concurrency,
                     name=f"modes-{mode}", settings=settings, beat=mode == "batch") as bench:
        if mode == "flex":
            import urllib.request

            request = urllib.request.Request(
                f"{bench.simulator_url}/_sim/config", method="POST",
                data=json.dumps({"flex_unavailable_rate": args.flex_unavailable}).encode(),
                headers={"Content-Type": "application/json"})
            urllib.request.urlopen(request).close()
        started = time.monotonic()
        report = json.loads(bench.docpipe("ingest", str(corpus), "--pipeline", args.pipeline,
                                          "--mode", mode, "--json"))
        wait_finished(bench.database_url, int(report["run_id"]), poll=1.0)
        seconds = time.monotonic() - started
        with session_scope(bench.database_url) as s:
            run = Attempt.run_id == report["run_id"]
            calls, input_tokens, output_tokens, usd = s.execute(select(
                func.count(), func.sum(Attempt.input_tokens), func.sum(Attempt.output_tokens),
                func.sum(Attempt.cost_usd)).where(run, Attempt.outcome == AttemptOutcome.OK)
            ).one()
            refused = s.scalar(select(func.count()).where(
                run, Attempt.outcome != AttemptOutcome.OK)) or 0
            batches = s.scalar(select(func.count()).select_from(Batch)) or 0
    return Measured(mode, seconds, int(calls), int(refused), int(input_tokens or 0),
                    int(output_tokens or 0), Decimal(usd or 0), int(batches))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--pipeline", default="extract")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-ms", default="200,800")
    parser.add_argument("--flex-unavailable", type=float, default=0.05)
    parser.add_argument("--modes", default="live,flex,batch")
    parser.add_argument("--record", action="store_true", help="Append to docs/benchmarks.md.")
    args = parser.parse_args()
    command = "python bench/modes.py " + " ".join(sys.argv[1:])

    with tempfile.TemporaryDirectory(prefix="docpipe-modes-") as tmp:
        work = Path(tmp)
        corpus = work / "corpus"
        write_corpus(corpus, args.docs, seed=7, words=(80, 600))
        results = [run_mode(mode, work, corpus, args) for mode in args.modes.split(",")]
    live = next((r for r in results if r.mode == "live"), results[0])
    machine = describe_machine()
    rows = [
        f"| {r.mode} | {r.calls:,} | {r.refused:,} | {r.batches:,} | {r.input_tokens:,} | "
        f"{r.output_tokens:,} | ${r.usd:.4f} | ${r.usd / r.calls * 1000:.4f} | "
        f"{r.usd / live.usd:.1%} | {r.seconds:.0f} s |"
        for r in results]
    text = "\n".join([
        f"### Live, flex and batch: {args.docs:,} documents "
        f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine}. `{args.pipeline}` on its model at the shipped prices, one worker "
        f"with {args.concurrency} threads, SQLite, simulator latency {args.latency_ms} ms "
        f"(median, p99); flex refused {args.flex_unavailable:.0%} of calls for lack of "
        "capacity; batch polled every 2 s. A fresh database and the same simulator seed for "
        "each mode.",
        "",
        "| mode | answered calls | refused or failed calls | batches | input tokens | "
        "output tokens | cost | per 1,000 documents | of live | wall time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]) + "\n"
    emit(text, record=args.record)


if __name__ == "__main__":
    main()
