"""Latency-bound throughput: docpipe against a raw ``AsyncOpenAI`` loop on the same simulator.

Both sides run the same ``--docs`` memos (mixed sizes) through the ``summarise`` request
against one simulator with no rate limits and a heavy-tailed latency (median 500 ms), at the
same total concurrency:

- **raw**: one process, an ``asyncio`` loop with ``--concurrency`` calls in flight through
  ``AsyncOpenAI.responses.create``; it reads each file and sends the pipeline's request body.
  No queue, no database, no limiter, no validation.
- **docpipe**: PostgreSQL (a throwaway cluster), Redis, one ``docpipe worker`` with its
  defaults (one engine process per core, ``concurrency / processes`` calls in flight each),
  and ``docpipe ingest`` of the folder.

Figures: documents per second for each (docpipe end to end, ingest included, and from its
first call to its last), the ratio, and CPU seconds per document: the raw process's (the SDK
call and its HTTP) against docpipe's workers and ingest. The difference is what docpipe
spends per document outside the SDK call. Peak resident memory of an engine process, too.

    python bench/throughput.py --docs 20000 --record
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from corpus import write_corpus  # noqa: E402
from record import describe_machine, emit  # noqa: E402
from soak import throwaway_postgres  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from stack import start_simulator, wait_finished  # noqa: E402

from pipelines import get_pipeline  # noqa: E402
from workers.db.models import Attempt, Item, ItemStatus, Run  # noqa: E402
from workers.db.session import session_scope  # noqa: E402
from workers.runtime.embedded import (  # noqa: E402
    child,
    docpipe_command,
    embedded_redis,
    free_port,
)

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process and its reaped children (all threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime + cutime + cstime) / TICKS


def tree_cpu(pid: int) -> float:
    """CPU of a process and of its live descendants (a prefork worker's pool)."""
    total = cpu_seconds(pid)
    for child_pid in _children(pid):
        total += tree_cpu(child_pid)
    return total


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text() if (task / "children").exists() else ""
        found += [int(p) for p in text.split()]
    return found


@dataclass
class Side:
    name: str
    seconds: float
    calls: int
    cpu: float
    #: docpipe only: from its first call's start to its last call's start.
    calling_seconds: float | None = None
    #: Share of the whole machine's CPU busy meanwhile (simulator, databases included).
    machine_busy: float = 0.0
    #: docpipe only: calls on the wire (requests the simulator is answering), sampled.
    mean_in_flight: float = 0.0
    #: The same, over the samples taken while items waited to be claimed (the raw loop:
    #: while calls were left to start).
    in_flight_while_queued: float = 0.0
    #: docpipe only: the calls out while items waited, as docpipe's own metric counts them
    #: (sent, their answers not yet read).
    counted_while_queued: float = 0.0
    #: docpipe only: seconds from ``docpipe ingest`` starting to the last call's answer,
    #: the last item's write and the run's end.
    last_answer_at: float = 0.0
    #: The mean time a call took, as its client measured it.
    mean_latency_ms: float = 0.0
    last_write_at: float = 0.0
    finished_at: float = 0.0
    #: docpipe only: seconds from ``docpipe ingest`` starting to the first call.
    first_call_after: float = 0.0
    ingest_seconds: float | None = None
    ingest_cpu: float | None = None
    processes: int = 1
    #: docpipe only: the largest peak resident memory of its engine processes.
    peak_rss_mb: float = 0.0

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds


async def _raw(files: list[Path], base_url: str, concurrency: int
               ) -> tuple[int, float, float, float]:
    """The calls made, when (``time.monotonic()``) the last started and the last ended, and
    the mean seconds a call took."""
    from openai import AsyncOpenAI

    pipeline = get_pipeline("summarise")
    client = AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0, timeout=120)
    queue: asyncio.Queue[Path] = asyncio.Queue()
    for path in files:
        queue.put_nowait(path)
    done = 0
    last_start = last_end = waited = 0.0

    async def runner() -> None:
        nonlocal done, last_start, last_end, waited
        while not queue.empty():
            path = queue.get_nowait()
            body = pipeline.request(path.read_text())
            start = last_start = time.monotonic()
            await client.responses.create(**body)
            last_end = time.monotonic()
            waited += last_end - start
            done += 1

    await asyncio.gather(*(runner() for _ in range(concurrency)))
    await client.close()
    return done, last_start, last_end, waited / max(done, 1)


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / TICKS, sum(values) / TICKS


def busy_share(before: tuple[float, float]) -> float:
    """Share of the machine's CPU that was busy since ``before`` (every process counted)."""
    busy, total = machine_cpu()
    return (busy - before[0]) / max(total - before[1], 1e-9)


def run_raw(files: list[Path], base_url: str, concurrency: int) -> Side:
    before = cpu_seconds(os.getpid())
    machine = machine_cpu()
    sampling = threading.Event()
    on_the_wire: list[tuple[float, int]] = []
    sampler = threading.Thread(target=_sample_wire, daemon=True,
                               args=(base_url, sampling, on_the_wire))
    started = time.monotonic()
    sampler.start()
    calls, last_start, last_end, latency = asyncio.run(_raw(files, base_url, concurrency))
    sampling.set()
    # Measured as docpipe's is: from the second second, while calls were left to start.
    calling = [n for at, n in on_the_wire if started + 1 <= at <= last_start]
    return Side("raw", time.monotonic() - started, calls, cpu_seconds(os.getpid()) - before,
                machine_busy=busy_share(machine), calling_seconds=last_start - started,
                last_answer_at=last_end - started, mean_latency_ms=latency * 1000,
                in_flight_while_queued=sum(calling) / max(len(calling), 1))


def _sample_wire(base_url: str, stop: threading.Event,
                 samples: list[tuple[float, int]]) -> None:
    """Every half second until ``stop``: (when, the requests the simulator is answering)."""
    while not stop.wait(0.5):
        samples.append((time.monotonic(), _on_the_wire(base_url)))


def _on_the_wire(base_url: str) -> int:
    stats_url = base_url.removesuffix("/v1") + "/_sim/stats?brief=1"
    with urllib.request.urlopen(stats_url, timeout=10) as response:
        return int(json.load(response)["in_flight"])


def _rss_mb(pid: int) -> tuple[float, float]:
    """A process's resident memory now and at its peak, in MB."""
    values = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return (int(values["VmRSS"].split()[0]) / 1024, int(values["VmHWM"].split()[0]) / 1024)


def _docpipe_in_flight(metrics_url: str) -> int:
    """The calls docpipe's processes have sent and not yet read the answer of, as its own
    metric ``docpipe_calls_in_flight`` reports them (summed over models)."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    return round(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                     if line.startswith("docpipe_calls_in_flight{")))


@dataclass(frozen=True)
class _Sample:
    on_the_wire: int  # requests the simulator was answering
    in_flight: int  # calls out, as docpipe counts them
    waiting: int  # items waiting to be claimed


def _sample_in_flight(database_url: str, base_url: str, metrics_url: str,
                      stop: threading.Event, samples: list[_Sample]) -> None:
    """Every half second until ``stop``: the calls out, where the simulator answers them and
    as docpipe counts them, and the items waiting to be claimed (pending or queued)."""
    while not stop.wait(0.5):
        on_the_wire = _on_the_wire(base_url)
        in_flight = _docpipe_in_flight(metrics_url)
        with session_scope(database_url) as session:
            waiting = session.scalar(select(func.count()).select_from(Item).where(
                Item.status.in_((ItemStatus.PENDING, ItemStatus.QUEUED)))) or 0
        samples.append(_Sample(on_the_wire, in_flight, int(waiting)))


def _wait_ready(log_path: Path, processes: int, timeout: float = 180) -> None:
    """Until each of ``processes`` Celery workers has logged that it is ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text() if log_path.exists() else ""
        if text.count(" ready.") >= processes:
            time.sleep(1)  # its first prefetch reaches the broker
            return
        time.sleep(0.2)
    raise SystemExit(f"the worker did not get ready in {timeout:.0f} s: see {log_path}")


def run_docpipe(corpus: Path, work: Path, env: dict[str, str], args: argparse.Namespace
                ) -> Side:
    processes = args.processes or os.cpu_count() or 1
    metrics_port = free_port()
    # Its metrics served, as in production: the calls in flight are read from them.
    run_env = env | {"DOCPIPE_WORKER_PROCESSES": str(processes),
                     "DOCPIPE_WORKER_CONCURRENCY": str(args.concurrency // processes),
                     "DOCPIPE_METRICS_PORT": str(metrics_port)}
    with ExitStack() as stack:
        # One command, as a user starts it: `docpipe worker` starts its processes itself.
        worker = stack.enter_context(child(
            docpipe_command("worker", "--hostname", "tp@%h", "--without-gossip",
                            "--without-mingle", "-Q", "docpipe.live"),
            env=run_env, what="worker", log_path=work / "worker.log"))
        # Every engine process connected and booted before the clock starts.
        _wait_ready(work / "worker.log", processes)
        engines = _children(worker.pid)
        profiler = None
        if args.profile:
            # Sampled from outside: py-spy adds no code to the worker (--nonblocking: it does
            # not even pause it). One engine process: they run the same code.
            profiler = subprocess.Popen(
                ["py-spy", "record", "--pid", str(engines[0]), "--rate", "200",
                 "--format", "raw", "--nonblocking", "--output", str(args.profile)],
                stdout=subprocess.DEVNULL, stderr=(work / "py-spy.log").open("ab"))
        cpu_before = tree_cpu(worker.pid)
        machine = machine_cpu()
        sampling = threading.Event()
        in_flight: list[_Sample] = []
        sampler = threading.Thread(target=_sample_in_flight, daemon=True, args=(
            env["DOCPIPE_DATABASE_URL"], env["OPENAI_BASE_URL"],
            f"http://127.0.0.1:{metrics_port}/metrics", sampling, in_flight))
        sampler.start()
        wall_start = datetime.now(UTC)
        started = time.monotonic()
        ingest = subprocess.Popen(
            docpipe_command("ingest", str(corpus), "--pipeline", "summarise", "--json"),
            env={**os.environ, **run_env}, stdout=subprocess.PIPE,
            stderr=(work / "ingest.log").open("ab"))
        assert ingest.stdout is not None
        report = json.loads(ingest.stdout.read())  # until it exits
        _, status, usage = os.wait4(ingest.pid, 0)  # its exact CPU, reaped here
        assert status == 0, (work / "ingest.log").read_text()
        ingest.returncode = 0
        ingest_seconds = time.monotonic() - started
        ingest_cpu = usage.ru_utime + usage.ru_stime
        wait_finished(env["DOCPIPE_DATABASE_URL"], int(report["run_id"]), poll=0.5)
        seconds = time.monotonic() - started
        sampling.set()
        machine_busy = busy_share(machine)
        cpu = tree_cpu(worker.pid) - cpu_before
        peak_rss = max(_rss_mb(pid)[1] for pid in engines)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(timeout=60)
        with session_scope(env["DOCPIPE_DATABASE_URL"]) as session:
            calls, first, last = session.execute(select(
                func.count(), func.min(Attempt.started_at),
                func.max(Attempt.started_at)).where(Attempt.run_id == report["run_id"])).one()
            ends = [started + timedelta(milliseconds=ms) for started, ms in session.execute(
                select(Attempt.started_at, Attempt.latency_ms)
                .where(Attempt.run_id == report["run_id"]))]
            latency = session.scalar(select(func.avg(Attempt.latency_ms))
                                     .where(Attempt.run_id == report["run_id"]))
            last_write = session.scalar(select(func.max(Item.finished_at))
                                        .where(Item.run_id == report["run_id"]))
            finished = session.scalar(select(Run.finished_at)
                                      .where(Run.id == report["run_id"]))
    calling = (last - first).total_seconds() if first and last else None
    if first is not None and first.tzinfo is None:  # SQLite gives them back naive
        first = first.replace(tzinfo=UTC)

    def since_start(moment: datetime | None) -> float:
        if moment is None:
            return float("nan")
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        return (moment - wall_start).total_seconds()

    steady = [sample.on_the_wire for sample in in_flight[2:-2]]
    queued = [sample for sample in in_flight if sample.waiting > 0][2:]
    return Side("docpipe", seconds, int(calls), cpu, calling_seconds=calling,
                ingest_seconds=ingest_seconds, ingest_cpu=ingest_cpu, processes=processes,
                peak_rss_mb=peak_rss, machine_busy=machine_busy,
                mean_in_flight=sum(steady) / max(len(steady), 1),
                in_flight_while_queued=sum(s.on_the_wire for s in queued) / max(len(queued), 1),
                counted_while_queued=sum(s.in_flight for s in queued) / max(len(queued), 1),
                last_answer_at=since_start(max(ends, default=None)),
                last_write_at=since_start(last_write), finished_at=since_start(finished),
                mean_latency_ms=float(latency or 0),
                first_call_after=(first - wall_start).total_seconds() if first else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--processes", type=int, help="docpipe's engine processes "
                        "(default: docpipe's, one per core); each keeps concurrency/processes "
                        "calls in flight")
    parser.add_argument("--latency-ms", default="500,4000",
                        help="simulator latency: MEDIAN,P99 (log-normal)")
    parser.add_argument("--words", default="50,1500", help="document length range, words")
    parser.add_argument("--profile", type=Path, help="write py-spy's samples of worker 0 "
                        "(collapsed stacks) here; see bench/profile_summary.py")
    parser.add_argument("--database-url", help="an empty PostgreSQL database to use instead "
                        "of starting a cluster")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    low, high = (int(v) for v in args.words.split(","))

    with tempfile.TemporaryDirectory(prefix="docpipe-throughput-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        os.chmod(work, 0o755)  # the postgres user needs to reach its data directory
        corpus = work / "corpus"
        write_corpus(corpus, args.docs, seed=11, words=(low, high))
        files = sorted(corpus.iterdir())
        # An empty PostgreSQL database given by URL (the CI smoke test's), or a cluster of
        # its own.
        database = args.database_url or stack.enter_context(throwaway_postgres(work))
        broker = stack.enter_context(embedded_redis(str(work)))
        # Each document meets the same latency on both sides: the comparison is of what
        # each does with the calls, not of which side drew the slowest ones near its end.
        base_url = start_simulator(stack, work, latency_ms=args.latency_ms, per_input=True)
        env = {"DOCPIPE_DATABASE_URL": database, "DOCPIPE_BROKER_URL": broker,
               "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "sk-bench"}
        os.environ.update(env)
        child_env = {**os.environ, **env}
        subprocess.run(docpipe_command("db", "upgrade"), env=child_env, check=True,
                       capture_output=True)
        raw = run_raw(files, base_url, args.concurrency)
        print(f"raw: {raw.calls} calls in {raw.seconds:.1f}s = {raw.per_second:.1f}/s",
              flush=True)
        ours = run_docpipe(corpus, work, env, args)

    ratio = ours.per_second / raw.per_second

    def share(calls: float) -> str:
        return f"{calls:.0f} of {args.concurrency} ({calls / args.concurrency:.0%})"

    counted, answering = share(ours.counted_while_queued), share(ours.in_flight_while_queued)
    raw_answering = share(raw.in_flight_while_queued)
    calling = ours.calls / ours.calling_seconds if ours.calling_seconds else float("nan")
    command = "python bench/throughput.py " + " ".join(sys.argv[1:])
    text = f"""## Latency-bound throughput against the raw SDK ({time.strftime('%Y-%m-%d')})

`{command}` on {describe_machine()}: {args.docs:,} memos of {low} to {high} words,
`summarise`, simulator latency {args.latency_ms} ms (median, p99; log-normal), no rate limits,
{args.concurrency} calls in flight on each side (docpipe: one `docpipe worker` with its
defaults and its metrics served, here {ours.processes} engine processes of
{args.concurrency // ours.processes} calls in flight; PostgreSQL 15, Redis).

| | documents | seconds | documents/s | CPU per document |
|---|---|---|---|---|
| raw `AsyncOpenAI` loop | {raw.calls:,} | {raw.seconds:.1f} | {raw.per_second:.1f} | \
{raw.cpu / raw.calls * 1000:.2f} ms |
| docpipe, ingest to last result | {ours.calls:,} | {ours.seconds:.1f} | \
{ours.per_second:.1f} | {ours.cpu / ours.calls * 1000:.2f} ms (workers) |
| docpipe, first call to last call | | {ours.calling_seconds or 0:.1f} | {calling:.1f} | |

- **Ratio, end to end: {ratio:.2f}** of the raw loop's documents per second
  ({calling / raw.per_second:.2f} counting from docpipe's first call).
- The first call started {ours.first_call_after:.1f} s after `docpipe ingest` did. The raw
  loop started its last call at {raw.calling_seconds or 0:.1f} s, and had its last answer at
  {raw.last_answer_at:.1f} s.
- A call took {raw.mean_latency_ms:.0f} ms on average in the raw loop and \
{ours.mean_latency_ms:.0f} ms in docpipe's (as each client measured it).
- Ingest took {ours.ingest_seconds:.1f} s and {ours.ingest_cpu:.1f} CPU s
  ({(ours.ingest_cpu or 0) / ours.calls * 1000:.2f} ms per document), while the workers ran.
- The machine's CPU was {raw.machine_busy:.0%} busy during the raw loop and
  {ours.machine_busy:.0%} during docpipe's run (every process: simulator, PostgreSQL, Redis).
- While items waited to be claimed (from the second second), docpipe had
  {counted} by its own count (`docpipe_calls_in_flight`: sent, the answer
  not yet read), and the simulator was answering {answering} of them;
  {ours.mean_in_flight:.0f} on average over the run (sampled every 0.5 s). The raw loop's
  calls the simulator was answering while it had calls to start: {raw_answering}.
- From `docpipe ingest`'s start: the last call started at \
{ours.first_call_after + (ours.calling_seconds or 0):.1f} s, its last answer came at \
{ours.last_answer_at:.1f} s, the last item was written at {ours.last_write_at:.1f} s, and the
  run was finished at {ours.finished_at:.1f} s.
- Peak resident memory of an engine process: {ours.peak_rss_mb:.0f} MB.
- docpipe's workers spent {(ours.cpu - raw.cpu) / ours.calls * 1000:.2f} CPU ms per document
  more than the raw loop's whole process: that is docpipe's cost outside the SDK call.
"""
    emit(text, record=args.record)


if __name__ == "__main__":
    main()
