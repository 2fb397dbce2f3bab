"""Logging: plain text, or one JSON object a line with the item's context on every record.

The context (run id, item id, attempt, request id) is held in context variables that
:func:`bind` sets while an item is processed, so every record logged meanwhile, by docpipe or a
library, carries it without each call site passing ``extra``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.json import JsonFormatter

#: The fields a record may carry from :func:`bind` (or from ``extra``).
CONTEXT_FIELDS = ("run_id", "item_id", "attempt", "request_id")
_context: ContextVar[dict[str, Any] | None] = ContextVar("docpipe_log_context", default=None)


@contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every record logged in this context until the block ends."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def update(**fields: Any) -> None:
    """Add ``fields`` to the current context (inside a :func:`bind` block)."""
    current = _context.get()
    if current is not None:
        current.update(fields)


class ContextFilter(logging.Filter):
    """Copy the bound context onto each record; a field given in ``extra`` wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def json_formatter() -> logging.Formatter:
    """One JSON object a line: time, level, logger, message, context, and any ``extra``."""
    return JsonFormatter(
        "{asctime}{levelname}{name}{message}", style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    )


def use_format(handlers: list[logging.Handler], log_format: str) -> None:
    """Put the context filter on ``handlers``, and the JSON formatter when asked."""
    for handler in handlers:
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter())
        if log_format == "json":
            handler.setFormatter(json_formatter())


def configure(log_format: str, level: int = logging.INFO) -> None:
    """Logging for a process Celery does not set up (the CLI, the simulator)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level)
    use_format(root.handlers, log_format)
