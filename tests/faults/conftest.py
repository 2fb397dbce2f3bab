"""The faults layer: real services, real workers, and one fault at a time.

Every test ends with :func:`assert_accounted_for`, the invariant docpipe promises whatever
happened: each item of the run has exactly one result for its pipeline version, or is
failed with a reason; nothing is left pending; the broker's queue and unacked set are empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import SimulatorProcess
from tests.support.stack import FAULT_SETTINGS, Stack
from workers.db.migrations import upgrade

pytestmark = pytest.mark.faults



@pytest.fixture
def stack(postgres_url: str, broker_url: str, simulator: SimulatorProcess, tmp_path: Path,
          configure: Any) -> Iterator[Stack]:
    """docpipe on PostgreSQL with fault-sized timings."""
    upgrade(postgres_url)
    configure(database_url=postgres_url)
    stack = Stack(postgres_url, broker_url, simulator, tmp_path, settings=dict(FAULT_SETTINGS))
    yield stack
    stack.stop_workers()




