"""Processes the tests drive: the simulator, docpipe workers and CLI commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.runtime.embedded import redis_server_binary, stop, wait_for_port


def docpipe_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "workers", *args]


@dataclass
class SimulatorProcess:
    """The simulator as a real HTTP server in a child process."""

    port: int
    log_path: Path
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            docpipe_argv("simulator", "--port", str(self.port), "--latency-ms", "5", *self.args),
            stdout=log, stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, process=self.process, what="simulator")

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, timeout=5)
            self.process = None

    def _call(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data,
            headers={"Content-Type": "application/json"}, method="POST" if data else "GET",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def configure(self, **changes: Any) -> None:
        """Change latency, limits or faults while it runs."""
        self._call("/_sim/config", changes)

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("/_sim/stats")
        return result


def docpipe_env(**values: Any) -> dict[str, str]:
    """Environment for a docpipe child process with the given settings."""
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("DOCPIPE_") and not k.startswith("DOCPIPE_TEST_"))}
    for key, value in values.items():
        name = key.upper() if key.startswith("openai_") else f"DOCPIPE_{key.upper()}"
        env[name] = str(value)
    return env


def run_docpipe(*args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 120,
                check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a docpipe CLI command to completion."""
    result = subprocess.run(docpipe_argv(*args), env=env, cwd=cwd, capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docpipe {' '.join(args)} exited {result.returncode}\n"
                             f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


@dataclass
class WorkerProcess:
    """A real ``celery worker`` started through ``docpipe worker``."""

    name: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    #: Run beat (the reconciler) inside this worker.
    beat: bool = False
    #: More ``celery worker`` options.
    extra: tuple[str, ...] = ()

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            docpipe_argv("worker", "--hostname", f"{self.name}@%h", "--without-gossip",
                         "--without-mingle", *(["--beat"] if self.beat else []), *self.extra),
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=self.log_path.parent,
        )

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, timeout=30)
            self.process = None

    def kill(self) -> None:
        """SIGKILL the worker and every process it started (its own process group)."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def terminate(self) -> None:
        """SIGTERM: Celery's warm shutdown. Returns once the worker has exited."""
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
            self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class RedisServer:
    """A Redis of the test's own, with AOF on, that the test may kill and start again."""

    port: int
    directory: Path
    password: str | None = None
    #: AOF fsync policy: ``always`` loses nothing; ``everysec`` is Redis's default.
    fsync: str = "always"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.directory), "--save", "", "--appendonly", "yes",
                "--appendfsync", self.fsync, "--maxmemory-policy", "noeviction"]
        if self.password:
            argv += ["--requirepass", self.password]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_for_port(self.port, process=self.process, what="redis-server")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, timeout=10)
            self.process = None
