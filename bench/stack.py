"""A one-machine docpipe for benchmarks: embedded Redis, the simulator, SQLite, one worker."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from workers.runtime.embedded import child, docpipe_command, embedded_redis, free_port


@dataclass
class BenchStack:
    """Where the benchmark's services listen, and the environment that reaches them."""

    database_url: str
    simulator_url: str
    env: dict[str, str]

    def docpipe(self, *args: str) -> str:
        """Run a ``docpipe`` command against the stack; return its standard output."""
        return subprocess.run(docpipe_command(*args), env={**os.environ, **self.env},
                              check=True, capture_output=True, text=True).stdout


def start_simulator(stack: ExitStack, work: Path, *, latency_ms: str, seed: int = 3,
                    per_input: bool = False) -> str:
    """Start the simulator (no rate limits) until ``stack`` closes; return its API base URL.
    ``per_input``: each document's latency is drawn from its text, not in request order."""
    port = free_port()
    stack.enter_context(child(
        docpipe_command("simulator", "--port", str(port), "--latency-ms", latency_ms,
                        "--seed", str(seed), *(["--latency-per-input"] if per_input else [])),
        port=port, what="simulator", log_path=work / "simulator.log"))
    return f"http://127.0.0.1:{port}/v1"


@contextmanager
def bench_stack(work: Path, *, latency_ms: str, concurrency: int, seed: int = 5,
                name: str = "bench", settings: dict[str, str] | None = None,
                beat: bool = False) -> Iterator[BenchStack]:
    """Start the services and one worker of ``concurrency`` threads; stop them on exit.

    ``settings`` are more environment variables for every docpipe process; ``beat`` runs
    beat inside the worker (batch mode needs it).
    """
    with ExitStack() as stack:
        database = f"sqlite:///{work}/{name}.db"
        broker = stack.enter_context(embedded_redis(str(work)))
        base_url = start_simulator(stack, work, latency_ms=latency_ms, seed=seed)
        env = {"DOCPIPE_DATABASE_URL": database, "DOCPIPE_BROKER_URL": broker,
               "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "sk-bench",
               "DOCPIPE_WORKER_CONCURRENCY": str(concurrency)} | (settings or {})
        bench = BenchStack(database, base_url.removesuffix("/v1"), env)
        bench.docpipe("db", "upgrade")
        stack.enter_context(child(
            docpipe_command("worker", *(["--beat"] if beat else []), "--hostname",
                            f"{name}@%h", "--without-gossip", "--without-mingle"),
            env=env, what="worker", log_path=work / "worker.log"))
        time.sleep(3)  # the worker connects before any clock starts
        yield bench


def wait_finished(database_url: str, run_id: int, *, poll: float = 0.2) -> None:
    """Return when run ``run_id`` has finished."""
    from sqlalchemy import select

    from workers.db.models import Run, RunStatus
    from workers.db.session import session_scope

    while True:
        with session_scope(database_url) as s:
            if s.scalar(select(Run.status).where(Run.id == run_id)) == RunStatus.FINISHED:
                return
        time.sleep(poll)
