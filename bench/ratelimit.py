"""Rate-bound benchmark: how much of a per-minute budget does a fleet of workers spend?

The simulator is limited to ``--rpm`` requests and ``--tpm`` tokens per minute, with buckets
that refill over a minute and answer 429 with the API's body and headers, like the real API.
``--workers`` ``docpipe worker`` processes then work through a corpus big enough to keep them
busy for ``--minutes``. Two fleets are run one after the other, on fresh state:

- ``docpipe``: the fleet-wide Redis limiter (the default), with no limits configured: the
  fleet learns them from the API's ``x-ratelimit-limit-*`` headers;
- ``configured``: the same limiter, told the limits (``DOCPIPE_MODEL_LIMITS``);
- ``celery``: the limiter off, and Celery's own per-worker ``rate_limit`` set to R/W per
  minute, what a Celery user would do today.

Achieved throughput is measured on the simulator's side, after ``--warmup`` seconds:
requests per minute as the API counts them (requests it admitted under its limits), and
tokens per minute as the API bills them (input + output of completed calls). The binding
limit is whichever is the larger share. 429s are counted over the whole run, warm-up
included: that is when a fleet that does not know its budget yet is refused.
The figures are printed and, with ``--record``, appended to ``docs/benchmarks.md``.

    python bench/ratelimit.py --rpm 600 --tpm 10000000 --minutes 5 --record
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
from record import emit  # noqa: E402

from workers.runtime.embedded import child, docpipe_command, embedded_redis, free_port  # noqa: E402


@dataclass
class Sample:
    at: float
    counters: dict[str, int]


@dataclass
class Result:
    fleet: str
    seconds: float
    rpm: float
    tpm: float
    requests: int
    rate_limited: int
    ok: int
    rpm_share: float
    tpm_share: float
    #: Over the whole run, warm-up included.
    all_requests: int = 0
    all_rate_limited: int = 0

    @property
    def binding(self) -> str:
        return "requests" if self.rpm_share >= self.tpm_share else "tokens"

    @property
    def share(self) -> float:
        return max(self.rpm_share, self.tpm_share)

    @property
    def limited_share(self) -> float:
        return self.all_rate_limited / self.all_requests if self.all_requests else 0.0


def stats(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/stats", timeout=10) as resp:
        counters: dict[str, int] = json.load(resp)["counters"]
    return counters


def run_fleet(fleet: str, args: argparse.Namespace, corpus: Path, work: Path) -> Result:
    """Start Redis, the simulator, a database and the workers; measure; tear it all down."""
    with ExitStack() as stack:
        broker = stack.enter_context(embedded_redis(str(work)))
        port = free_port()
        stack.enter_context(child(
            docpipe_command("simulator", "--port", str(port), "--rpm", str(args.rpm),
                            "--tpm", str(args.tpm), "--latency-ms", args.latency_ms,
                            "--limit-window-seconds", str(args.limit_window_seconds),
                            "--seed", "1"),
            port=port, what="simulator", log_path=work / f"simulator-{fleet}.log"))
        env = {
            "DOCPIPE_DATABASE_URL": args.database_url or f"sqlite:///{work}/{fleet}.db",
            "DOCPIPE_BROKER_URL": broker,
            "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
            "OPENAI_API_KEY": "sk-bench",
            "DOCPIPE_MAX_ATTEMPTS": "10",
        }
        if args.concurrency:
            env["DOCPIPE_WORKER_CONCURRENCY"] = str(args.concurrency)
        if fleet == "configured":
            env["DOCPIPE_MODEL_LIMITS"] = json.dumps(
                {"gpt-4.1-mini": {"rpm": args.rpm, "tpm": args.tpm}})
        if fleet == "celery":
            per_worker = args.rpm / args.workers
            env |= {"DOCPIPE_RATELIMIT_ENABLED": "false",
                    "DOCPIPE_CELERY_TASK_RATE_LIMIT": f"{per_worker:g}/m"}
        full_env = {**os.environ, **env}
        subprocess.run(docpipe_command("db", "upgrade"), env=full_env, check=True,
                       capture_output=True)
        for i in range(args.workers):
            stack.enter_context(child(
                docpipe_command("worker", "--hostname", f"{fleet}{i}@%h", "--without-gossip",
                                "--without-mingle"),
                env=env, what="worker", log_path=work / f"worker-{fleet}-{i}.log"))
        started = time.monotonic()
        ingest = subprocess.run(docpipe_command("ingest", str(corpus), "--json"), env=full_env,
                                check=True, capture_output=True, text=True)
        print(f"[{fleet}] ingested: {ingest.stdout.strip()}", flush=True)

        warm_until = started + args.warmup
        end = started + args.warmup + args.minutes * 60
        while time.monotonic() < warm_until:
            time.sleep(0.5)
        first = Sample(time.monotonic(), stats(port))
        while time.monotonic() < end:
            time.sleep(min(15.0, max(0.0, end - time.monotonic())))
            now = Sample(time.monotonic(), stats(port))
            done = now.counters.get("ok", 0) - first.counters.get("ok", 0)
            print(f"[{fleet}] {now.at - first.at:5.0f}s  ok {done}  429s "
                  f"{now.counters.get('rate_limited', 0) - first.counters.get('rate_limited', 0)}",
                  flush=True)
        last = Sample(time.monotonic(), stats(port))

    def delta(name: str) -> int:
        return last.counters.get(name, 0) - first.counters.get(name, 0)

    seconds = last.at - first.at
    rpm = delta("admitted") * 60 / seconds
    tpm = delta("ok_tokens") * 60 / seconds
    return Result(fleet, seconds, rpm, tpm, delta("requests"), delta("rate_limited"),
                  delta("ok"), rpm / args.rpm, tpm / args.tpm,
                  all_requests=last.counters.get("requests", 0),
                  all_rate_limited=last.counters.get("rate_limited", 0))


def machine() -> str:
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}")


def report(results: list[Result], args: argparse.Namespace, command: str) -> str:
    lines = [
        f"### Rate-bound: {args.rpm} RPM, {args.tpm} TPM, {args.workers} workers "
        f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine()}. Simulator latency {args.latency_ms} ms (median, p99), "
        f"limits enforced over {args.limit_window_seconds:g} s, "
        f"{args.concurrency or 'the default (256)'} calls in flight per worker process, "
        f"warm-up {args.warmup:g} s excluded, "
        f"measured {args.minutes:g} min.",
        "",
        "| fleet | requests/min | tokens/min | binding limit | share of it | calls | "
        "429s in the whole run | 429 share |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.fleet} | {r.rpm:,.1f} | {r.tpm:,.0f} | {r.binding} | {r.share:.1%} | "
            f"{r.requests:,} | {r.all_rate_limited:,} of {r.all_requests:,} | "
            f"{r.limited_share:.2%} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rpm", type=int, default=600)
    parser.add_argument("--tpm", type=int, default=10_000_000)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=30.0, help="Seconds not measured.")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=None,
                        help="Calls in flight per worker process (DOCPIPE_WORKER_CONCURRENCY; "
                        "default: docpipe's).")
    parser.add_argument("--limit-window-seconds", type=float, default=60.0,
                        help="Seconds of each limit the simulator lets through at once.")
    parser.add_argument("--latency-ms", default="300,1500")
    parser.add_argument("--docs", type=int, default=None,
                        help="Corpus size (default: more than the limits allow in the run).")
    parser.add_argument("--fleets", default="docpipe,configured,celery",
                        help="docpipe (limits learned), configured, celery.")
    parser.add_argument("--database-url", default=None, help="Default: a SQLite file per run.")
    parser.add_argument("--record", action="store_true", help="Append to docs/benchmarks.md.")
    args = parser.parse_args()

    # About 850 tokens a call on this corpus: never fewer calls than either limit allows.
    calls_per_minute = min(args.rpm, args.tpm / 500)
    docs = args.docs or int(calls_per_minute * (args.minutes + args.warmup / 60) * 1.3)
    command = "python bench/ratelimit.py " + " ".join(sys.argv[1:])
    results = []
    with tempfile.TemporaryDirectory(prefix="docpipe-bench-") as tmp:
        work = Path(tmp)
        corpus = work / "corpus"
        write_corpus(corpus, docs, seed=7, words=(60, 900))
        for fleet in args.fleets.split(","):
            results.append(run_fleet(fleet, args, corpus, work))
    text = report(results, args, command)
    emit(text, record=args.record)


if __name__ == "__main__":
    main()
