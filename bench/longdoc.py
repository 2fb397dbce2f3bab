"""Long documents: one N-page document by map-reduce, against calling its parts one by one.

Starts Redis, the simulator (``--latency-ms``), a SQLite database and one worker with
``--concurrency`` threads, ingests one synthetic ``--pages``-page contract with ``--pipeline``
and waits for its single result. Reports the wall time from ingest to result against the
sequential time, the sum of every call's latency as measured (what processing the same
calls one after another would take), and the tree: chunks, reduces and depth.

    python bench/longdoc.py --pages 1000 --record
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from record import describe_machine, emit  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from stack import bench_stack, wait_finished  # noqa: E402

from tests.support.corpus import contract  # noqa: E402
from workers.db.models import Attempt, AttemptOutcome, Item  # noqa: E402
from workers.db.session import session_scope  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--pipeline", default="summarise")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-ms", default="500,2000")
    parser.add_argument("--record", action="store_true", help="Append to docs/benchmarks.md.")
    args = parser.parse_args()
    command = "python bench/longdoc.py " + " ".join(sys.argv[1:])

    with tempfile.TemporaryDirectory(prefix="docpipe-longdoc-") as tmp:
        work = Path(tmp)
        (work / "contract.md").write_text(contract(args.pages))
        with bench_stack(work, latency_ms=args.latency_ms, concurrency=args.concurrency,
                         name="longdoc") as bench:
            database = bench.database_url
            started = time.monotonic()
            out = bench.docpipe("ingest", str(work / "contract.md"), "--pipeline",
                                args.pipeline, "--json")
            run_id = int(json.loads(out)["run_id"])
            ingested = time.monotonic() - started
            wait_finished(database, run_id)
            wall = time.monotonic() - started
        with session_scope(database) as s:
            latencies = s.scalars(select(Attempt.latency_ms).where(
                Attempt.run_id == run_id, Attempt.outcome == AttemptOutcome.OK)).all()
            # The critical path's floor: the slowest call of each level, one level after another.
            slowest = s.execute(
                select(Item.level, func.max(Attempt.latency_ms))
                .join(Item, Item.id == Attempt.item_id)
                .where(Attempt.run_id == run_id, Attempt.outcome == AttemptOutcome.OK)
                .group_by(Item.level)).all()
            floor = sum(ms for _, ms in slowest) / 1000
            chunks = s.scalar(select(func.count()).where(Item.run_id == run_id,
                                                         Item.level == 0)) or 0
            reduces = s.scalar(select(func.count()).where(Item.run_id == run_id,
                                                          Item.level > 0)) or 0
            depth = s.scalar(select(func.max(Item.level)).where(Item.run_id == run_id)) or 0
            failed = s.scalar(select(func.count()).where(Item.run_id == run_id,
                                                         Item.status == "failed")) or 0
    sequential = sum(latencies) / 1000
    mean = sequential / len(latencies)
    machine = describe_machine()
    text = "\n".join([
        f"### Long document: {args.pages} pages by map-reduce "
        f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine}. `{args.pipeline}` (16,000 tokens a chunk), one worker with "
        f"{args.concurrency} threads, SQLite, simulator latency {args.latency_ms} ms "
        "(median, p99).",
        "",
        "| pages | chunks | reduces | reduce levels | calls | failed | wall time (ingest to "
        "result) | of which ingest | sequential time (sum of call latencies) | wall / "
        "sequential | slowest call per level, summed | mean call |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {args.pages:,} | {chunks} | {reduces} | {depth} | {len(latencies)} | {failed} | "
        f"{wall:.1f} s | {ingested:.1f} s | {sequential:.1f} s | {wall / sequential:.3f} | "
        f"{floor:.1f} s | {mean:.2f} s |",
    ]) + "\n"
    emit(text, record=args.record)


if __name__ == "__main__":
    main()
