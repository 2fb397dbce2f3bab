"""Worker lifecycle hooks: the one place for per-process setup and start-up checks."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_init, worker_process_init, worker_process_shutdown

from workers.db.session import dispose_engines, ensure_migrated, forget_inherited_engines
from workers.errors import ConfigurationError
from workers.settings import get_settings

log = logging.getLogger("docpipe.worker")


@worker_init.connect
def check_before_start(**_: Any) -> None:
    """Refuse to start on an un-migrated database or without an API key."""
    settings = get_settings()
    try:
        ensure_migrated()
        if settings.openai_api_key is None:
            raise ConfigurationError("OPENAI_API_KEY is not set: workers cannot call the API")
    except ConfigurationError as exc:
        # SystemExit passes through Celery's signal dispatch, which swallows Exceptions.
        raise SystemExit(f"docpipe worker: {exc}") from exc
    log.info("docpipe worker ready: database migrated, model API at %s",
             settings.openai_base_url or "https://api.openai.com/v1")


@worker_process_init.connect
def after_fork(**_: Any) -> None:
    """A forked pool child builds its own engine instead of sharing its parent's sockets."""
    forget_inherited_engines()


@worker_process_shutdown.connect
def on_process_shutdown(**_: Any) -> None:
    dispose_engines()
