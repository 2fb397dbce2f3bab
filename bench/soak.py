"""Soak: a large run on PostgreSQL during which workers are killed and Redis is restarted.

Starts its own PostgreSQL cluster (initdb, as the ``postgres`` user when run as root), a
Redis with AOF, the simulator and ``--workers`` ``docpipe worker`` processes (the first also
runs beat), with docpipe's default settings unless ``--timings short``. Ingests ``--docs``
documents, then, while they are processed:

- every ``--kill-every`` seconds, SIGKILLs one worker's whole process group (each worker in
  turn) and starts it again ``--down`` seconds later; without ``--kill-every``, once, the
  first worker at ``--kill-at`` of the run done;
- at ``--redis-at`` of the run done, SIGKILLs Redis and starts it again on its AOF.

``--no-faults`` runs the same without either, for the time to compare against.

At the end it checks the faults layer's invariant (every document has exactly one result or
a failed item with a reason, nothing pending, the broker's queues and unacked set empty) and
prints what the faults cost: calls lost with the killed worker, documents paid for twice,
worker losses counted, and the simulator's requests against the documents.

    python bench/soak.py --docs 20000 --kill-every 60 --record
    python bench/soak.py --docs 20000 --no-faults --record
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from corpus import write_corpus  # noqa: E402
from record import describe_machine, emit  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from tests.support.accounting import assert_accounted_for  # noqa: E402
from tests.support.services import RedisServer, WorkerProcess  # noqa: E402
from workers.db.models import Attempt, AttemptOutcome, Item  # noqa: E402
from workers.db.session import session_scope  # noqa: E402
from workers.runtime.embedded import (  # noqa: E402
    docpipe_command,
    free_port,
    stop,
    wait_for_port,
)

#: ``--timings short``: the timings of the soaks before holders and heartbeats, when only a
#: short lease brought a lost worker's items back within the soak.
SHORT_TIMINGS = {
    "DOCPIPE_VISIBILITY_TIMEOUT_SECONDS": "180", "DOCPIPE_LEASE_SECONDS": "30",
    "DOCPIPE_TASK_SOFT_TIME_LIMIT_SECONDS": "40", "DOCPIPE_TASK_TIME_LIMIT_SECONDS": "50",
    "DOCPIPE_REQUEST_TIMEOUT_SECONDS": "20", "DOCPIPE_RECONCILE_INTERVAL_SECONDS": "5",
    "DOCPIPE_WORKER_LIVENESS_SECONDS": "30",
}


@dataclass
class Cluster:
    """A PostgreSQL cluster of the bench's own, which a fault may stop and start again."""

    url: str
    data: Path
    options: str
    log: Path
    pg_ctl: str
    prefix: list[str]

    def start(self) -> None:
        subprocess.run([*self.prefix, self.pg_ctl, "-D", str(self.data), "-o", self.options,
                        "-l", str(self.log), "-w", "start"], check=True, capture_output=True)

    def stop(self, mode: str = "fast") -> None:
        """``immediate``: SIGQUIT to the postmaster, as a crash or a failover does."""
        subprocess.run([*self.prefix, self.pg_ctl, "-D", str(self.data), "-m", mode, "stop"],
                       capture_output=True)


@contextmanager
def throwaway_cluster(work: Path) -> Iterator[Cluster]:
    """A PostgreSQL cluster of its own, its URL to the ``postgres`` database."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    initdb = shutil.which("initdb") or str(bins[-1] / "initdb")
    pg_ctl = shutil.which("pg_ctl") or str(bins[-1] / "pg_ctl")
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    home = work / "pg"
    home.mkdir()
    if as_root:
        shutil.chown(home, "postgres", "postgres")
    data, port = home / "data", free_port()
    subprocess.run([*prefix, initdb, "-D", str(data), "-U", "docpipe", "--auth=trust",
                    "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
    options = (f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c max_connections=300 "
               "-c fsync=off -c full_page_writes=off")
    cluster = Cluster(f"postgresql+psycopg://docpipe@127.0.0.1:{port}/postgres", data,
                      options, home / "log", pg_ctl, prefix)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@contextmanager
def throwaway_postgres(work: Path) -> Iterator[str]:
    """A PostgreSQL cluster of its own; yields a SQLAlchemy URL to its ``postgres`` database."""
    with throwaway_cluster(work) as cluster:
        yield cluster.url


def start_services(stack: ExitStack, work: Path, *, latency_ms: str, seed: int,
                   fsync: str = "always") -> tuple[Cluster, RedisServer, int]:
    """A PostgreSQL, a Redis with AOF and the simulator of the bench's own, stopped with
    ``stack``: the database cluster, the Redis, and the simulator's port."""
    cluster = stack.enter_context(throwaway_cluster(work))
    redis = RedisServer(free_port(), work / "redis", fsync=fsync)
    redis.start()
    stack.callback(redis.kill)
    sim_port = free_port()
    sim = subprocess.Popen(
        docpipe_command("simulator", "--port", str(sim_port), "--latency-ms", latency_ms,
                        "--seed", str(seed)),
        stdout=(work / "simulator.log").open("ab"), stderr=subprocess.STDOUT)
    stack.callback(stop, sim)
    wait_for_port(sim_port, process=sim, what="simulator")
    return cluster, redis, sim_port


def counts(database_url: str, run_id: int) -> dict[str, int]:
    with session_scope(database_url) as s:
        rows = s.execute(select(Item.status, func.count()).where(Item.run_id == run_id)
                         .group_by(Item.status)).all()
        return dict(rows)


def simulator_stats(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/stats", timeout=10) as resp:
        counters: dict[str, int] = json.load(resp)["counters"]
    return counters


@dataclass(frozen=True)
class Services:
    database_url: str
    broker_url: str


@dataclass
class Figures:
    docs: int
    seconds: float
    succeeded: int
    failed: int
    attempts: int
    lost_with_worker: int
    cut_short: int
    paid_twice: int
    worker_losses: int
    simulator_ok: int
    events: list[str]


def soak(args: argparse.Namespace, work: Path) -> Figures:
    corpus = work / "corpus"
    write_corpus(corpus, args.docs, seed=11, words=(40, 600))
    events: list[str] = []
    with ExitStack() as stack:
        cluster, redis, sim_port = start_services(
            stack, work, latency_ms=args.latency_ms, seed=3, fsync="everysec")
        database_url = cluster.url
        env = {**os.environ, **timings(args),
               "DOCPIPE_DATABASE_URL": database_url, "DOCPIPE_BROKER_URL": redis.url,
               "OPENAI_BASE_URL": f"http://127.0.0.1:{sim_port}/v1", "OPENAI_API_KEY": "sk-soak"}
        if args.concurrency:
            env["DOCPIPE_WORKER_CONCURRENCY"] = str(args.concurrency)
        upgrade = subprocess.run(docpipe_command("db", "upgrade"), env=env,
                                 capture_output=True, text=True)
        if upgrade.returncode:
            raise SystemExit(f"docpipe db upgrade failed:\n{upgrade.stderr}")
        workers = [WorkerProcess(f"soak{i}", env, work / f"worker{i}.log", beat=i == 0)
                   for i in range(args.workers)]
        for worker in workers:
            worker.start()
            stack.callback(worker.kill)

        started = time.monotonic()
        ingest = subprocess.run(docpipe_command("ingest", str(corpus), "--json"), env=env,
                                check=True, capture_output=True, text=True)
        run_id = int(json.loads(ingest.stdout)["run_id"])
        events.append(f"{time.monotonic() - started:.0f} s: ingest done")
        kills, restarted_redis = 0, args.no_faults
        next_kill = started + args.kill_every if args.kill_every else None
        while True:
            status = counts(database_url, run_id)
            done = status.get("succeeded", 0) + status.get("failed", 0)
            elapsed = time.monotonic() - started
            print(f"{elapsed:6.0f} s  {done:6d}/{args.docs} done  {status}", flush=True)
            if done >= args.docs:
                break
            if next_kill is not None:
                kill_now = time.monotonic() >= next_kill
            else:
                kill_now = not (kills or args.no_faults) and done >= args.kill_at * args.docs
            if kill_now:
                victim = workers[kills % len(workers)]
                victim.kill()
                events.append(f"{elapsed:.0f} s: {victim.name} killed with SIGKILL at "
                              f"{done} done")
                time.sleep(args.down)
                victim.start()
                kills += 1
                if next_kill is not None:
                    next_kill += args.kill_every
            elif kills and not restarted_redis and done >= args.redis_at * args.docs:
                redis.kill()
                events.append(f"{elapsed:.0f} s: Redis killed with SIGKILL at {done} done")
                time.sleep(args.down)
                redis.start()
                restarted_redis = True
            if elapsed > args.timeout:
                raise SystemExit(f"the soak did not finish within {args.timeout} s: {status}")
            time.sleep(2)
        seconds = time.monotonic() - started
        assert_accounted_for(Services(database_url, redis.url), run_id, broker_timeout=180)
        events.append("invariant held: every document accounted for once, broker empty")
        with session_scope(database_url) as s:
            lost = s.execute(select(Attempt.error_code, func.count())
                             .where(Attempt.run_id == run_id,
                                    Attempt.outcome == AttemptOutcome.LOST)
                             .group_by(Attempt.error_code)).all()
            failed = s.execute(select(Item.last_error_code, Item.worker_losses, func.count())
                               .where(Item.run_id == run_id, Item.status == "failed")
                               .group_by(Item.last_error_code, Item.worker_losses)).all()
            if failed:
                events.append("failed, by cause: " + ", ".join(
                    f"{code} after {losses} worker losses: {n}" for code, losses, n in failed))
            if lost:
                events.append("calls lost, by cause: " + ", ".join(
                    f"{code} {n}" for code, n in sorted(lost, key=lambda row: -row[1])))
            per_item = (select(Attempt.item_id, func.count().label("n"))
                        .where(Attempt.run_id == run_id, Attempt.outcome == AttemptOutcome.OK)
                        .group_by(Attempt.item_id).subquery())
            figures = Figures(
                docs=args.docs, seconds=seconds,
                succeeded=counts(database_url, run_id).get("succeeded", 0),
                failed=counts(database_url, run_id).get("failed", 0),
                attempts=s.scalar(select(func.count()).select_from(Attempt)
                                  .where(Attempt.run_id == run_id)) or 0,
                lost_with_worker=s.scalar(select(func.count()).select_from(Attempt).where(
                    Attempt.run_id == run_id, Attempt.outcome == AttemptOutcome.LOST,
                    Attempt.error_code == "worker_lost")) or 0,
                cut_short=s.scalar(select(func.count()).select_from(Attempt).where(
                    Attempt.run_id == run_id, Attempt.outcome == AttemptOutcome.LOST,
                    Attempt.error_code != "worker_lost")) or 0,
                paid_twice=s.scalar(select(func.count()).select_from(per_item)
                                    .where(per_item.c.n > 1)) or 0,
                worker_losses=s.scalar(select(func.coalesce(func.sum(Item.worker_losses), 0))
                                       .where(Item.run_id == run_id)) or 0,
                simulator_ok=simulator_stats(sim_port).get("ok", 0),
                events=events,
            )
    return figures


def timings(args: argparse.Namespace) -> dict[str, str]:
    return SHORT_TIMINGS if args.timings == "short" else {}


def report(f: Figures, args: argparse.Namespace, command: str) -> str:
    machine = describe_machine()
    faults = ("no faults" if args.no_faults else
              f"a worker killed every {args.kill_every:.0f} s and Redis restarted"
              if args.kill_every else "a worker killed and Redis restarted")
    concurrency = (f"{args.concurrency} calls in flight per process" if args.concurrency
                   else "the default calls in flight per process")
    settings = timings(args)
    lines = [
        f"### Soak: {f.docs:,} documents, {faults} "
        f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine}. PostgreSQL 15, Redis with AOF, {args.workers} `docpipe worker` "
        f"commands (an engine process per core each, {concurrency}), simulator latency "
        f"{args.latency_ms} ms (median, p99). Timings: "
        + (", ".join(f"{k.removeprefix('DOCPIPE_').lower()}={v}" for k, v in settings.items())
           if settings else "docpipe's defaults") + ".",
        "",
        *(f"- {event}" for event in f.events),
        "",
        "| documents | wall time | docs/s | succeeded | failed | attempt rows | lost with the "
        "killed worker | cut short by an error in docpipe's services | items with two stored "
        "answers | worker losses counted | 200s at the simulator | calls paid beyond one per "
        "document |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {f.docs:,} | {f.seconds:.0f} s | {f.docs / f.seconds:.1f} | {f.succeeded:,} | "
        f"{f.failed:,} | {f.attempts:,} | {f.lost_with_worker:,} | {f.cut_short:,} | "
        f"{f.paid_twice:,} | {f.worker_losses:,} | {f.simulator_ok:,} | "
        f"{f.simulator_ok - f.succeeded:,} |",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=None,
                        help="Calls in flight per worker process (DOCPIPE_WORKER_CONCURRENCY); "
                        "the default setting's if not given.")
    parser.add_argument("--timings", choices=("default", "short"), default="default",
                        help="docpipe's default lease, visibility and holder timings, or the "
                        "short ones of the soaks before heartbeats.")
    parser.add_argument("--latency-ms", default="200,1000")
    parser.add_argument("--kill-at", type=float, default=0.3,
                        help="Share done at the one kill, without --kill-every.")
    parser.add_argument("--kill-every", type=float, default=None,
                        help="Kill a worker (each in turn) every this many seconds.")
    parser.add_argument("--no-faults", action="store_true",
                        help="No kill, no Redis restart: the time to compare against.")
    parser.add_argument("--redis-at", type=float, default=0.6,
                        help="Share done at the Redis restart.")
    parser.add_argument("--down", type=float, default=3.0, help="Seconds down after each.")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--record", action="store_true", help="Append to docs/benchmarks.md.")
    args = parser.parse_args()
    command = "python bench/soak.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="docpipe-soak-") as tmp:
        work = Path(tmp)
        if os.geteuid() == 0:
            os.chmod(work, 0o755)  # the postgres user needs to reach its data directory
        figures = soak(args, work)
    text = report(figures, args, command)
    emit(text, record=args.record)


if __name__ == "__main__":
    main()
