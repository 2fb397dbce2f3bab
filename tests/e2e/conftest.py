"""A running docpipe: database, broker, simulator and worker processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import SimulatorProcess
from tests.support.stack import Stack
from workers.db.migrations import upgrade

pytestmark = pytest.mark.e2e




@pytest.fixture
def stack(postgres_url: str, broker_url: str, simulator: SimulatorProcess, tmp_path: Path,
          configure: Any) -> Iterator[Stack]:
    upgrade(postgres_url)
    configure(database_url=postgres_url)
    stack = Stack(postgres_url, broker_url, simulator, tmp_path)
    yield stack
    stack.stop_workers()


@pytest.fixture
def sqlite_stack(sqlite_url: str, broker_url: str, simulator: SimulatorProcess, tmp_path: Path,
                 configure: Any) -> Iterator[Stack]:
    upgrade(sqlite_url)
    configure(database_url=sqlite_url)
    stack = Stack(sqlite_url, broker_url, simulator, tmp_path)
    yield stack
    stack.stop_workers()
