"""Waiting on a condition, never on a sleep sized for a quiet machine."""

from __future__ import annotations

import time
from typing import Any


def wait_until(predicate: Any, *, timeout: float, interval: float = 0.2, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
