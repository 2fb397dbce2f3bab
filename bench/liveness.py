"""Liveness: how long a run waits after one of its workers dies or stops, with the defaults.

Starts its own PostgreSQL cluster, a Redis server, the simulator and two ``docpipe worker``
commands with docpipe's default settings (lease, visibility timeout, heartbeat, holder
timeout). Ingests ``--docs`` short documents, then at ``--at`` of the run done applies one
fault to the first worker's whole process group:

- ``kill``: SIGKILL; the worker is not started again;
- ``stop``: SIGSTOP, then SIGCONT ``--stop-seconds`` later;
- ``none``: nothing (the baseline: when the run would have ended anyway);
- ``postgres``: PostgreSQL stopped at once (``pg_ctl -m immediate``: SIGQUIT, as a crash or
  a failover) and started again ``--down`` seconds later; the time is counted from its
  return;
- ``redis``: Redis killed with SIGKILL and started again on its AOF, on the same port,
  ``--down`` seconds later; counted from its return;
- ``poison``: one of the documents is poison: the simulator holds its call open, and
  whichever worker holds it is killed and started again, as if that document killed it,
  until the item is quarantined (the time is then counted from its first claim).

Throughout, a sampler reads PostgreSQL's sessions every 0.1 s and keeps the longest time a
claim (and any other statement) of docpipe's waited on a lock: a stopped worker must never
hold a lock another's claim waits on.

With ``--beat`` the second worker also runs beat (the reconciler). Prints, and with
``--record`` appends to ``docs/reliability.md``: the seconds from the fault to the run's end,
the faults layer's invariant (every document exactly one result, the broker empty), calls
made for documents that had already succeeded before the fault, worker losses counted, and
the calls on record.

    python bench/liveness.py --fault kill --record
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from corpus import write_corpus  # noqa: E402
from record import describe_machine, emit  # noqa: E402
from soak import Services, counts, start_services  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402
from sqlalchemy.exc import DBAPIError  # noqa: E402

from tests.support.accounting import assert_accounted_for  # noqa: E402
from tests.support.corpus import input_keys  # noqa: E402
from tests.support.locks import LockWaits  # noqa: E402
from tests.support.services import WorkerProcess  # noqa: E402
from workers.db.models import Attempt, Item, ItemStatus  # noqa: E402
from workers.db.models import WorkerProcess as WorkerRow  # noqa: E402
from workers.db.session import session_scope  # noqa: E402
from workers.runtime.embedded import docpipe_command  # noqa: E402


@dataclass
class Figures:
    fault: str
    beat: bool
    docs: int
    fault_at_done: int
    seconds_after_fault: float
    succeeded: int
    failed: int
    invariant: str
    repaid: int
    worker_losses: int
    attempts: int
    by_outcome: dict[str, int]
    #: Seconds from the service's return to the run's end (``postgres``, ``redis``).
    after_return: float | None = None
    #: The longest a claim, and any statement, of docpipe's was seen waiting on a lock.
    longest_claim_wait: float = 0.0
    longest_lock_wait: float = 0.0
    longest_lock_waiter: str = ""


#: The poison document's text; the simulator holds open every call that carries it.
POISON = "This memo is poison for whoever processes it."


def measure(args: argparse.Namespace, work: Path) -> Figures:
    corpus = work / "corpus"
    poisoned = args.fault == "poison"
    write_corpus(corpus, args.docs - poisoned, seed=5, words=(20, 120))
    if poisoned:
        (corpus / "poison.txt").write_text(POISON)
    work.chmod(0o755)  # initdb runs as the postgres user when this runs as root
    with ExitStack() as stack:
        cluster, redis, sim_port = start_services(stack, work,
                                                  latency_ms=args.latency_ms, seed=5)
        database_url = cluster.url
        if poisoned:
            # Its call is held open until the kill, so no claim of it goes unseen.
            configure = urllib.request.Request(
                f"http://127.0.0.1:{sim_port}/_sim/config", method="POST",
                data=json.dumps({"hang_on": POISON, "timeout_seconds": 600}).encode(),
                headers={"Content-Type": "application/json"})
            urllib.request.urlopen(configure, timeout=10).close()
        env = {**os.environ, "DOCPIPE_DATABASE_URL": database_url,
               "DOCPIPE_BROKER_URL": redis.url,
               "OPENAI_BASE_URL": f"http://127.0.0.1:{sim_port}/v1", "OPENAI_API_KEY": "sk-bench"}
        subprocess.run(docpipe_command("db", "upgrade"), env=env, check=True,
                       capture_output=True)
        workers = [WorkerProcess(f"live{i}", env, work / f"worker{i}.log",
                                 beat=args.beat and i == 1) for i in range(2)]
        for worker in workers:
            worker.start()
            stack.callback(worker.kill)

        ingest = subprocess.run(docpipe_command("ingest", str(corpus), "--json"), env=env,
                                check=True, capture_output=True, text=True)
        run_id = int(json.loads(ingest.stdout)["run_id"])
        if args.fault == "poison":
            return poison(args, database_url, run_id, workers)
        waits = LockWaits(database_url)
        stack.callback(waits.stop)
        faulted_at: float | None = None
        returned_at: float | None = None
        any_victim = args.fault in ("none", "postgres", "redis")
        fault_done = 0
        done_before: list[int] = []
        victim = workers[0].process
        assert victim is not None
        continued = args.fault != "stop"
        while True:
            try:
                status = counts(database_url, run_id)
            except DBAPIError:  # the database is back in a moment
                time.sleep(0.25)
                continue
            done = status.get("succeeded", 0) + status.get("failed", 0)
            now = time.monotonic()
            if done >= args.docs:
                break
            if faulted_at is None and done >= args.at * args.docs and (
                    any_victim or held_by_group(database_url, run_id, victim.pid)):
                faulted_at, fault_done = now, done
                with session_scope(database_url) as s:
                    done_before = list(s.scalars(select(Item.id).where(
                        Item.run_id == run_id, Item.status == ItemStatus.SUCCEEDED)))
                if args.fault == "kill":
                    os.killpg(victim.pid, signal.SIGKILL)
                elif args.fault == "stop":
                    os.killpg(victim.pid, signal.SIGSTOP)
                elif args.fault in ("postgres", "redis"):
                    print(f"{args.fault} down at {done} done", flush=True)
                    if args.fault == "postgres":
                        cluster.stop("immediate")
                    else:
                        redis.kill()
                    time.sleep(args.down)
                    (cluster if args.fault == "postgres" else redis).start()
                    returned_at = time.monotonic()
                    print(f"{args.fault} back after {returned_at - faulted_at:.1f} s",
                          flush=True)
                    continue
                print(f"{args.fault} at {done} done, the victim holding "
                      f"{held_by_group(database_url, run_id, victim.pid)} items", flush=True)
            if not continued and faulted_at is not None and \
                    now - faulted_at >= args.stop_seconds:
                os.killpg(victim.pid, signal.SIGCONT)
                continued = True
                print("continued", flush=True)
            if args.debug_after and faulted_at is not None and \
                    now - faulted_at > args.debug_after:
                args.debug_after = 0
                with session_scope(database_url) as s:
                    for row in s.execute(select(Item.id, Item.status, Item.holder,
                                                Item.updated_at, Item.worker_losses)
                                         .where(Item.run_id == run_id,
                                                Item.status.not_in(["succeeded", "failed"]))):
                        print("open item", row, flush=True)
                    for row in s.execute(text("SELECT pid, state, application_name, "
                                              "left(query, 80), xact_start FROM "
                                              "pg_stat_activity WHERE datname IS NOT NULL")):
                        print("session", row, flush=True)
            if faulted_at is not None and now - faulted_at > args.timeout:
                raise SystemExit(f"the run did not end within {args.timeout} s of the fault: "
                                 f"{status}")
            time.sleep(0.25)
        assert faulted_at is not None, "the run ended before the fault"
        ended = time.monotonic()
        seconds = ended - faulted_at
        waits.stop()
        if not continued:
            os.killpg(victim.pid, signal.SIGCONT)
        if args.fault == "stop":
            time.sleep(10)  # the continued worker writes its late answers first
        invariant = "held"
        try:
            assert_accounted_for(Services(database_url, redis.url), run_id,
                                 broker_timeout=args.broker_timeout)
        except AssertionError as exc:
            invariant = f"broken: {str(exc).splitlines()[0][:160]}"
            print(f"invariant broken: {exc}", flush=True)
        with session_scope(database_url) as s:
            by_outcome = dict(s.execute(
                select(Attempt.outcome, func.count()).where(Attempt.run_id == run_id)
                .group_by(Attempt.outcome)).all())
            losses = s.scalar(select(func.coalesce(func.sum(Item.worker_losses), 0))
                              .where(Item.run_id == run_id)) or 0
        paid = simulator_stats_by_input(sim_port)
        keys = input_keys(Services(database_url, redis.url), done_before,  # type: ignore[arg-type]
                          "summarise").values()
        repaid = sum(1 for key in keys if paid.get(key, 0) > 1)
        status = counts(database_url, run_id)
        return Figures(args.fault, args.beat, args.docs, fault_done, seconds,
                       status.get("succeeded", 0), status.get("failed", 0), invariant,
                       repaid, int(losses), sum(by_outcome.values()), by_outcome,
                       None if returned_at is None else ended - returned_at,
                       waits.claim, waits.any, waits.waiter)


def poison(args: argparse.Namespace, database_url: str, run_id: int,
           workers: list[WorkerProcess]) -> Figures:
    """Play a poison document: whichever worker holds it is killed (its whole process group,
    as an OOM killer would) and started again, until the item is quarantined. The simulator
    holds its call open meanwhile. Returns the seconds from its first claim to its
    quarantine."""
    with session_scope(database_url) as s:
        target = s.scalar(select(Item.id).where(Item.run_id == run_id,
                                                Item.source.like("%poison.txt")))
    first_claim: float | None = None
    kills = 0
    while True:
        with session_scope(database_url) as s:
            item = s.get(Item, target)
            assert item is not None
            status, holder = item.status, item.holder
            pids = dict(s.execute(select(WorkerRow.id, WorkerRow.pid)).all())
        now = time.monotonic()
        if status == ItemStatus.FAILED:
            break
        if status == ItemStatus.RUNNING and holder is not None:
            first_claim = now if first_claim is None else first_claim
            pid = pids.get(holder) or int(holder.split(":")[-2])  # host:pid:nonce
            for worker in workers:
                if worker.process is not None and _in_group(pid, worker.process.pid):
                    worker.kill()
                    worker.start()
                    kills += 1
                    print(f"{now - first_claim:6.1f} s: killed the worker holding item "
                          f"{target} ({kills})", flush=True)
        if first_claim is not None and now - first_claim > args.timeout:
            raise SystemExit(f"item {target} was not quarantined within {args.timeout} s")
        time.sleep(0.25)
    assert first_claim is not None
    seconds = time.monotonic() - first_claim
    with session_scope(database_url) as s:
        item = s.get(Item, target)
        assert item is not None
        print(f"item {target}: {item.status} {item.last_error_code}: "
              f"{item.last_error_message}", flush=True)
        losses = int(item.worker_losses)
        by_outcome = dict(s.execute(
            select(Attempt.outcome, func.count()).where(Attempt.item_id == target)
            .group_by(Attempt.outcome)).all())
    # The other documents' fate: the run's end, and any of them quarantined with it.
    deadline = time.monotonic() + args.timeout
    while True:
        status_counts = counts(database_url, run_id)
        if status_counts.get("succeeded", 0) + status_counts.get("failed", 0) >= args.docs:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"the run did not end within {args.timeout} s: {status_counts}")
        time.sleep(0.5)
    with session_scope(database_url) as s:
        others = list(s.scalars(select(Item.id).where(
            Item.run_id == run_id, Item.status == ItemStatus.FAILED, Item.id != target)))
    print(f"run ended {time.monotonic() - first_claim:.1f} s after the first claim; other "
          f"items failed: {others or 'none'}", flush=True)
    return Figures("poison", args.beat, args.docs, 0, seconds,
                   status_counts.get("succeeded", 0), status_counts.get("failed", 0),
                   f"quarantined after {kills} kills", 0, losses,
                   sum(by_outcome.values()), by_outcome)


def held_by_group(database_url: str, run_id: int, pgid: int) -> int:
    """How many of the run's items processes of the process group ``pgid`` hold now."""
    with session_scope(database_url) as s:
        rows = s.execute(select(WorkerRow.id, WorkerRow.pid)).all()
        tokens = [token for token, pid in rows if _in_group(pid, pgid)]
        return int(s.scalar(select(func.count()).select_from(Item).where(
            Item.run_id == run_id, Item.status == ItemStatus.RUNNING,
            Item.holder.in_(tokens))) or 0) if tokens else 0


def _in_group(pid: int, pgid: int) -> bool:
    try:
        return os.getpgid(pid) == pgid
    except ProcessLookupError:
        return False


def simulator_stats_by_input(port: int) -> dict[str, int]:
    """Successful answers per document input key (the simulator's own count)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/stats", timeout=10) as resp:
        paid: dict[str, int] = json.load(resp)["ok_by_input"]
    return paid


def report(f: Figures, args: argparse.Namespace, command: str) -> str:
    fault = {"kill": "one worker killed with SIGKILL",
             "stop": f"one worker stopped with SIGSTOP for {args.stop_seconds:g} s",
             "none": "no fault",
             "postgres": f"PostgreSQL stopped at once (SIGQUIT) and back {args.down:g} s "
                         "later",
             "redis": f"Redis killed (SIGKILL) and back {args.down:g} s later",
             "poison": "a poison document (each worker that holds it is killed)"}[f.fault]
    lines = [
        f"### Liveness: {f.docs} documents, {fault}, {'with' if f.beat else 'without'} beat "
        f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {describe_machine()}. PostgreSQL 15, Redis, two `docpipe worker` commands "
        f"with the default settings, simulator latency {args.latency_ms} ms.",
        "",
        "| fault at | run ended after the fault | after the service's return | succeeded "
        "| failed | invariant | documents done before the fault paid again | worker losses "
        "| longest claim wait on a lock | longest lock wait of any statement | calls on "
        "record (by outcome) |",
        "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|",
        f"| {f.fault_at_done} done | {f.seconds_after_fault:.1f} s | "
        + ("–" if f.after_return is None else f"{f.after_return:.1f} s")
        + f" | {f.succeeded} | {f.failed} | {f.invariant} | {f.repaid} | {f.worker_losses} | "
        f"{f.longest_claim_wait:.2f} s | {f.longest_lock_wait:.2f} s"
        + (f" (`{f.longest_lock_waiter}`)" if f.longest_lock_waiter else "")
        + f" | {f.attempts} ("
        + ", ".join(f"{k} {v}" for k, v in sorted(f.by_outcome.items())) + ") |",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=600)
    parser.add_argument("--fault", choices=("kill", "stop", "none", "poison", "postgres", "redis"),
                        default="kill")
    parser.add_argument("--at", type=float, default=0.3, help="Share of the run done.")
    parser.add_argument("--beat", action="store_true", help="The surviving worker runs beat.")
    parser.add_argument("--stop-seconds", type=float, default=60.0)
    parser.add_argument("--down", type=float, default=1.5,
                        help="Seconds PostgreSQL or Redis stays down (postgres, redis).")
    parser.add_argument("--latency-ms", default="50")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--debug-after", type=float, default=0,
                        help="Print the open items and database sessions once, this many "
                        "seconds after the fault.")
    parser.add_argument("--broker-timeout", type=float, default=120.0)
    parser.add_argument("--record", action="store_true",
                        help="Append to docs/reliability.md.")
    args = parser.parse_args()
    command = "python bench/liveness.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="docpipe-liveness-") as tmp:
        figures = measure(args, Path(tmp))
    emit(report(figures, args, command), record=args.record,
         target=ROOT / "docs" / "reliability.md")


if __name__ == "__main__":
    main()
