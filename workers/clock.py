"""The one clock docpipe reads: timezone-aware UTC, for rows, attempts and calls alike."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)
