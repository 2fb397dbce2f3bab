"""Scale: does a document cost the same in a run of 1,000 as in a run of 100,000?

For each size in ``--sizes``, on fresh services (a throwaway PostgreSQL cluster, Redis, the
simulator with no limits):

1. ``docpipe ingest`` of a folder of that many memos, with no worker running: documents per
   second from the folder to queued messages (the command's wall time, and the run's own
   span from its creation to its last item queued, which leaves out the process start), and
   the ingest process's peak memory (a streaming ingest holds one batch, whatever the
   folder's size).
2. Enqueue alone: ``docpipe reprocess --pipeline extract --only missing``, as a nightly run
   of a second pipeline does, writes an item and sends a message for every stored document
   (the documents are not read or written again). Documents per second over the run's own
   span, and the command's peak memory.
3. ``status`` on the ingested run: ``repository.run_report`` in this process (median of 5),
   and ``docpipe status RUN --json`` as a user runs it (median of 3, process start included).
4. Two workers of 32 threads work through the queue. Throughput and worker CPU per document
   are taken between the moments 10% and 90% of the first ``--window`` documents (or of the
   run, if smaller) have succeeded, so every size is measured past its ramp-up and before its
   tail. The workers' memory (the sum of their resident sizes) is read at both moments.

    python bench/scale.py --sizes 1000,10000,100000 --record
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from corpus import write_corpus  # noqa: E402
from record import describe_machine, emit  # noqa: E402
from soak import throwaway_postgres  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from stack import start_simulator  # noqa: E402
from throughput import tree_cpu  # noqa: E402

from workers.db import repository as repo  # noqa: E402
from workers.db.models import Item, ItemStatus, Run  # noqa: E402
from workers.db.session import session_scope  # noqa: E402
from workers.runtime.embedded import child, docpipe_command, embedded_redis  # noqa: E402


@dataclass
class Size:
    docs: int
    ingest_seconds: float
    ingest_span: float
    ingest_peak_mb: float
    enqueue_span: float
    enqueue_peak_mb: float
    status_ms: float
    status_command_ms: float
    measured: int
    seconds: float
    worker_cpu: float
    rss_start_mb: float
    rss_end_mb: float

    @property
    def per_second(self) -> float:
        return self.measured / self.seconds if self.seconds else float("nan")


def rss_mb(pid: int) -> float:
    """Resident size of a process and its live descendants, in MiB."""
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1])
    mb = total / 1024
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        mb += sum(rss_mb(int(c)) for c in children)
    return mb


def run_span(database: str, run_id: int) -> float:
    """Seconds from the run's creation to its last item queued."""
    with session_scope(database) as session:
        created = session.scalar(select(Run.created_at).where(Run.id == run_id))
        last = session.scalar(select(func.max(Item.queued_at)).where(Item.run_id == run_id))
    assert created is not None and last is not None
    return (last - created).total_seconds()


def timed_command(args: list[str], env: dict[str, str], log: Path
                  ) -> tuple[dict[str, object], float, float]:
    """Run a docpipe command that prints JSON: its report, wall seconds and peak MiB."""
    started = time.monotonic()
    process = subprocess.Popen(docpipe_command(*args), env=env, stdout=subprocess.PIPE,
                               stderr=log.open("ab"))
    assert process.stdout is not None
    report = json.loads(process.stdout.read())
    _, status, usage = os.wait4(process.pid, 0)
    assert status == 0, log.read_text()
    process.returncode = 0
    return report, time.monotonic() - started, usage.ru_maxrss / 1024


def succeeded(database: str, run_id: int) -> int:
    with session_scope(database) as session:
        return int(session.scalar(select(func.count()).where(
            Item.run_id == run_id, Item.status == ItemStatus.SUCCEEDED)) or 0)


def measure(docs: int, args: argparse.Namespace, tmp: Path) -> Size:
    work = tmp / f"size-{docs}"
    work.mkdir()
    os.chmod(work, 0o755)  # the postgres user needs to reach its data directory
    low, high = (int(v) for v in args.words.split(","))
    corpus = work / "corpus"
    write_corpus(corpus, docs, seed=docs, words=(low, high))
    with ExitStack() as stack:
        database = stack.enter_context(throwaway_postgres(work))
        broker = stack.enter_context(embedded_redis(str(work)))
        base_url = start_simulator(stack, work, latency_ms=args.latency_ms)
        env = {**os.environ, "DOCPIPE_DATABASE_URL": database, "DOCPIPE_BROKER_URL": broker,
               "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "sk-bench",
               "DOCPIPE_WORKER_CONCURRENCY": str(args.concurrency // 2),
               "DOCPIPE_WORKER_POOL": "threads"}
        subprocess.run(docpipe_command("db", "upgrade"), env=env, check=True,
                       capture_output=True)

        report, ingest_seconds, ingest_peak = timed_command(
            ["ingest", str(corpus), "--pipeline", "summarise", "--json"], env,
            work / "ingest.log")
        run_id = int(str(report["run_id"]))
        ingest_span = run_span(database, run_id)
        print(f"{docs:,}: ingest {ingest_seconds:.1f} s ({ingest_span:.1f} s in the run), "
              f"peak {ingest_peak:.0f} MiB", flush=True)
        report, _, enqueue_peak = timed_command(
            ["reprocess", "--pipeline", "extract", "--only", "missing", "--queue",
             "docpipe.nightly", "--json"], env, work / "reprocess.log")
        enqueue_span = run_span(database, int(str(report["run_id"])))
        print(f"{docs:,}: enqueue {enqueue_span:.1f} s, peak {enqueue_peak:.0f} MiB",
              flush=True)

        in_process = []
        for _ in range(5):
            began = time.perf_counter()
            with session_scope(database) as session:
                assert repo.run_report(session, run_id) is not None
            in_process.append(time.perf_counter() - began)
        command = []
        for _ in range(3):
            began = time.perf_counter()
            subprocess.run(docpipe_command("status", str(run_id), "--json"), env=env,
                           check=True, capture_output=True)
            command.append(time.perf_counter() - began)

        readings = [(0.0, 0, 0.0, 0.0)] * 2
        if not args.ingest_only:
            window = min(docs, args.window)
            workers = [stack.enter_context(child(
                docpipe_command("worker", "--hostname", f"scale{i}@%h", "--without-gossip",
                                "--without-mingle", "-Q", "docpipe.live"),
                env=env, what="worker", log_path=work / f"worker{i}.log")) for i in range(2)]
            readings = []
            for mark in (window // 10, window - window // 10):
                while (done := succeeded(database, run_id)) < mark:
                    time.sleep(0.5)
                readings.append((time.monotonic(), done,
                                 sum(tree_cpu(w.pid) for w in workers),
                                 sum(rss_mb(w.pid) for w in workers)))
                print(f"{docs:,}: {done:,} done", flush=True)
        (t0, d0, c0, m0), (t1, d1, c1, m1) = readings
    return Size(docs, ingest_seconds, ingest_span, ingest_peak, enqueue_span, enqueue_peak,
                statistics.median(in_process) * 1000, statistics.median(command) * 1000,
                d1 - d0, t1 - t0, c1 - c0, m0, m1)


ENQUEUE_HEADER = ("| documents | ingest command | ingest, docs/s (command; run) "
                  "| ingest peak memory | enqueue (reprocess), docs/s | its peak memory "
                  "| `run_report` | `docpipe status` |\n|---:|---:|---:|---:|---:|---:|---:|---:|")
WORK_HEADER = ("| documents | measured | docs/s | time per document (against the smallest) "
               "| worker CPU per document | workers' memory, 10% → 90% |\n"
               "|---:|---:|---:|---:|---:|---:|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--window", type=int, default=10_000,
                        help="documents processed and measured at each size (at most)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", default="500,4000",
                        help="simulator latency: MEDIAN,P99 (log-normal)")
    parser.add_argument("--words", default="50,1500", help="document length range, words")
    parser.add_argument("--ingest-only", action="store_true",
                        help="measure ingest, enqueue and status; start no worker")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="docpipe-scale-") as tmp:
        os.chmod(tmp, 0o755)
        results = [measure(docs, args, Path(tmp)) for docs in sizes]

    base = results[0]
    enqueue_rows = "\n".join(
        f"| {r.docs:,} | {r.ingest_seconds:.1f} s | {r.docs / r.ingest_seconds:,.0f}; "
        f"{r.docs / r.ingest_span:,.0f} | {r.ingest_peak_mb:.0f} MiB "
        f"| {r.docs / r.enqueue_span:,.0f} | {r.enqueue_peak_mb:.0f} MiB "
        f"| {r.status_ms:.0f} ms | {r.status_command_ms:.0f} ms |" for r in results)
    work_rows = "\n".join(
        f"| {r.docs:,} | {r.measured:,} | {r.per_second:.1f} "
        f"| {1000 / r.per_second:.1f} ms ({base.per_second / r.per_second:.2f}) "
        f"| {r.worker_cpu / r.measured * 1000:.1f} ms "
        f"| {r.rss_start_mb:.0f} → {r.rss_end_mb:.0f} MiB |" for r in results
        if r.measured)
    command = "python bench/scale.py " + " ".join(sys.argv[1:])
    text = f"""### Scale: {', '.join(f'{s:,}' for s in sizes)} documents \
({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})

Command: `{command}`{"  "}
Machine: {describe_machine()}. Fresh PostgreSQL 15 (fsync off), Redis and simulator per size;
`summarise` on memos of {args.words.replace(',', ' to ')} words. Ingest and enqueue run
alone, before any worker starts.

{ENQUEUE_HEADER}
{enqueue_rows}
"""
    if work_rows:
        text += f"""
Then 2 workers of {args.concurrency // 2} threads, simulator latency {args.latency_ms} ms
(median, p99), no limits; throughput between 10% and 90% of the first {args.window:,}
documents (or of the run).

{WORK_HEADER}
{work_rows}
"""
    emit(text, record=args.record)


if __name__ == "__main__":
    main()
