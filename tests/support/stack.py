"""A running docpipe: database, broker, simulator and worker processes, driven through its CLI."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.services import SimulatorProcess, WorkerProcess, docpipe_env, run_docpipe
from tests.support.waiting import wait_until
from workers.db import repository as repo
from workers.db.session import session_scope


@dataclass
class Stack:
    """docpipe wired to real services, driven through its CLI."""

    database_url: str
    broker_url: str
    simulator: SimulatorProcess
    tmp: Path
    settings: dict[str, Any] = field(default_factory=dict)
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        values: dict[str, Any] = {
            "database_url": self.database_url, "broker_url": self.broker_url,
            "openai_base_url": self.simulator.base_url, "openai_api_key": "sk-e2e-secret-key",
            "worker_concurrency": 8, "worker_processes": 1, "max_attempts": 4,
            "retry_base_seconds": 0.05,
            "retry_max_seconds": 0.5, "request_timeout_seconds": 10,
        }
        return docpipe_env(**(values | self.settings))

    def start_workers(self, count: int = 1, *, beat: bool = False) -> None:
        for i in range(count):
            worker = WorkerProcess(f"w{len(self.workers)}", self.env,
                                   self.tmp / f"worker{len(self.workers)}.log",
                                   beat=beat and i == 0)
            worker.start()
            self.workers.append(worker)

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers.clear()

    def cli(self, *args: str, check: bool = True) -> Any:
        result = run_docpipe(*args, env=self.env, check=check)
        return json.loads(result.stdout) if "--json" in args else result

    def ingest(self, *paths: Path | str, pipeline: str = "summarise") -> dict[str, int]:
        report: dict[str, int] = self.cli("ingest", *map(str, paths), "--pipeline", pipeline,
                                          "--json")
        return report

    def report(self, run_id: int) -> repo.RunReport:
        with session_scope(self.database_url) as session:
            report = repo.run_report(session, run_id)
        assert report is not None
        return report

    def wait_for(self, run_id: int, status: str = "finished", timeout: float = 120
                 ) -> repo.RunReport:
        try:
            wait_until(lambda: self.report(run_id).status == status, timeout=timeout,
                       what=f"run {run_id} to be {status}")
        except AssertionError as exc:
            logs = "\n".join(w.log()[-3000:] for w in self.workers)
            raise AssertionError(f"{exc}; report={self.report(run_id)}\n{logs}") from None
        return self.report(run_id)


#: Timings short enough for faults to play out within a test. The settings validator still
#: holds: every limit and wait stays below the visibility timeout. They shorten what the
#: other faults wait on (a request timeout, a countdown, the breaker, the broker's
#: visibility timeout), not the noticing of a death: the holder timeout stays the default
#: 30 s, and the tests of kills, stops and poison use the default timings throughout. The
#: 6 s lease is the backstop for a live process hung on one item, which the visibility
#: tests exercise.
FAULT_SETTINGS: dict[str, Any] = {
    "visibility_timeout_seconds": 12, "lease_seconds": 6, "task_soft_time_limit_seconds": 8,
    "task_time_limit_seconds": 10, "request_timeout_seconds": 4, "max_inline_wait_seconds": 2,
    "max_countdown_seconds": 4, "breaker_max_open_seconds": 8, "reconcile_interval_seconds": 1,
    "worker_liveness_seconds": 6, "heartbeat_seconds": 1,
}
