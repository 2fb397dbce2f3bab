"""A dead or misconfigured service, met by the real commands: one line naming it, no
traceback, no password, and the documented exit code."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_PASSWORD
from tests.support.services import docpipe_env, run_docpipe
from workers.runtime.embedded import free_port, redis_server_binary, wait_for_port
from workers.runtime.failures import EXIT_SERVICE

pytestmark = pytest.mark.e2e

#: Every command that needs the database, and worker start.
COMMANDS = (("ingest", "{folder}", "--pipeline", "extract"), ("status",), ("worker",),
            ("db", "upgrade"))


def attempts(env: dict[str, str], folder: Path, *commands: tuple[str, ...]
             ) -> list[tuple[tuple[str, ...], int, str]]:
    """Each command run to its end (at once: each starts an interpreter), with its exit code
    and everything it printed."""
    def one(command: tuple[str, ...]) -> tuple[tuple[str, ...], int, str]:
        args = [part.format(folder=folder) for part in command]
        result = run_docpipe(*args, env=env, cwd=folder, check=False, timeout=90)
        return command, result.returncode, result.stdout + result.stderr

    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(one, commands))


def assert_one_line(outcomes: list[tuple[tuple[str, ...], int, str]], *, secret: str,
                    words: tuple[str, ...], code: int = EXIT_SERVICE) -> None:
    for command, returncode, printed in outcomes:
        lines = [line for line in printed.splitlines() if line.strip()]
        where = f"docpipe {' '.join(command)} printed:\n{printed}"
        assert returncode == code, where
        assert len(lines) == 1, where
        assert "Traceback" not in printed and secret not in printed, where
        assert lines[0].startswith("docpipe: "), where
        for word in words:
            assert word in lines[0], where


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "memo.txt").write_text("The board approved the budget.")
    return tmp_path


def test_a_closed_port(folder: Path) -> None:
    url = f"postgresql+psycopg://docpipe:{POSTGRES_PASSWORD}@127.0.0.1:{free_port()}/docpipe"
    outcomes = attempts(docpipe_env(database_url=url, openai_api_key="sk-test"), folder,
                        *COMMANDS)
    assert_one_line(outcomes, secret=POSTGRES_PASSWORD, words=(
        "the database at postgresql+psycopg://docpipe:***@127.0.0.1:", "refused the connection",
        "DOCPIPE_DATABASE_URL"))


@pytest.mark.postgres
def test_a_wrong_database_name(postgres_server: str, folder: Path) -> None:
    url = postgres_server.rsplit("/", 1)[0] + "/no_such_db"
    outcomes = attempts(docpipe_env(database_url=url, openai_api_key="sk-test"), folder,
                        *COMMANDS)
    assert_one_line(outcomes, secret=POSTGRES_PASSWORD, words=(
        "the database at", "has no database 'no_such_db'", "createdb no_such_db"))


@pytest.mark.postgres
def test_a_wrong_password(postgres_server: str, folder: Path) -> None:
    url = postgres_server.replace(POSTGRES_PASSWORD, "wrong-canary-9d2e")
    outcomes = attempts(docpipe_env(database_url=url, openai_api_key="sk-test"), folder,
                        *COMMANDS)
    assert_one_line(outcomes, secret="wrong-canary-9d2e", words=(
        "the database at", "refused the user name or password", "DOCPIPE_DATABASE_URL"))


@pytest.mark.postgres
def test_a_wrong_scheme(postgres_server: str, folder: Path) -> None:
    url = postgres_server.replace("postgresql+psycopg://", "postgres://")
    outcomes = attempts(docpipe_env(database_url=url, openai_api_key="sk-test"), folder,
                        *COMMANDS)
    assert_one_line(outcomes, secret=POSTGRES_PASSWORD, words=(
        "the database at postgres://", "scheme postgres://", "postgresql+psycopg://"))


@pytest.fixture
def redis_with_a_password(tmp_path: Path) -> Iterator[str]:
    """host:port of a Redis server that requires the password ``right-9c1``."""
    port = free_port()
    process = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path), "--requirepass", "right-9c1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, process=process, what="redis-server")
    yield f"127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


def test_the_broker_down_or_refusing_the_password(redis_with_a_password: str,
                                                   folder: Path) -> None:
    env = docpipe_env(openai_api_key="sk-test")
    run_docpipe("db", "upgrade", env=env, cwd=folder)  # the embedded SQLite database
    closed = f"redis://:broker-canary-41c7@127.0.0.1:{free_port()}/0"
    (down,) = attempts({**env, "DOCPIPE_BROKER_URL": closed}, folder, COMMANDS[0])
    assert_one_line([down], secret="broker-canary-41c7", words=(
        "the broker at redis://:***@127.0.0.1:", "refused the connection",
        "DOCPIPE_BROKER_URL"))
    wrong = f"redis://:broker-canary-41c7@{redis_with_a_password}/0"
    (refused,) = attempts({**env, "DOCPIPE_BROKER_URL": wrong}, folder, COMMANDS[0])
    assert_one_line([refused], secret="broker-canary-41c7", words=(
        "the broker at redis://:***@", "refused the password"))
    right = f"redis://:right-9c1@{redis_with_a_password}/0"
    (ingested,) = attempts({**env, "DOCPIPE_BROKER_URL": right}, folder, COMMANDS[0])
    assert ingested[1] == 0, ingested[2]


def test_a_broker_that_is_not_redis_is_refused_with_the_settings(folder: Path) -> None:
    env = docpipe_env(broker_url="amqp://guest:amqp-canary-5b@127.0.0.1:5672//")
    outcomes = attempts(env, folder, COMMANDS[0], ("status",))
    assert_one_line(outcomes, secret="amqp-canary-5b", code=2, words=(
        "invalid settings: DOCPIPE_BROKER_URL", "redis://HOST:6379/0", "not amqp://"))


def test_debug_shows_the_whole_traceback(folder: Path) -> None:
    url = f"postgresql+psycopg://docpipe:x@127.0.0.1:{free_port()}/docpipe"
    result = run_docpipe("--debug", "status", env=docpipe_env(database_url=url), cwd=folder,
                         check=False)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "OperationalError" in result.stderr
