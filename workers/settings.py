"""The one settings object, read by Celery, the database engine, Alembic and the CLI.

Values come from the environment (``DOCPIPE_*``, plus the standard ``OPENAI_API_KEY`` and
``OPENAI_BASE_URL``) or a ``.env`` file. Secrets are :class:`~pydantic.SecretStr`: they
never appear in a repr, a log line, a task message or a database row.
"""

from __future__ import annotations

import math
import os
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: Requests a minute one prompt_cache_key keeps on one cache machine (see the API docs).
REQUESTS_PER_CACHE_KEY = 15
#: Model calls a worker process keeps in flight on its event loop unless told otherwise:
#: enough for multi-second calls at a few hundred requests per minute.
DEFAULT_CALLS_IN_FLIGHT = 256
DEFAULT_DATABASE_FILE = Path(".docpipe") / "docpipe.db"
#: Broker URL schemes kombu's Redis transport takes.
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+socket", "sentinel")
DEFAULT_DATABASE_URL = f"sqlite:///./{DEFAULT_DATABASE_FILE}"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"


class ModelLimits(BaseModel):
    """Requests and tokens per minute the account may spend on one model."""

    rpm: int = Field(gt=0)
    tpm: int = Field(gt=0)


class Schedule(BaseModel):
    """A reprocessing run that beat starts on a cron schedule (see ``docpipe reprocess``)."""

    pipeline: str
    #: Five cron fields: minute hour day-of-month month day-of-week (UTC).
    cron: str = "0 2 * * *"
    only: list[Literal["missing", "outdated", "failed"]] = Field(
        default=["missing", "outdated", "failed"])
    where: str | None = None
    #: Only documents stored in the last this many days; None: all of them.
    since_days: float | None = Field(default=None, gt=0)
    queue: str = "docpipe.nightly"
    budget_usd: Decimal | None = Field(default=None, ge=0)
    #: ``flex`` sends the calls at the flex tier: half price, slower, sometimes refused.
    mode: Literal["live", "flex", "batch"] = "live"
    #: Batch mode: the run must be done this many hours after it starts (see --deadline-hours).
    deadline_hours: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check_cron(self) -> Self:
        if len(self.cron.split()) != 5:
            raise ValueError(f"cron {self.cron!r}: five fields expected (minute hour "
                             "day-of-month month day-of-week)")
        if self.mode == "batch" and self.budget_usd is not None:
            raise ValueError("budget_usd is not enforced for batch runs yet")
        return self


class ModelPrice(BaseModel):
    """Standard-tier USD per 1M tokens; batch and flex bill half."""

    input: Decimal = Field(ge=0)
    cached_input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)


class Settings(BaseSettings):
    """docpipe's configuration. Every field maps to ``DOCPIPE_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="DOCPIPE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # URLs may carry passwords: kept out of repr, and logged only through redacting helpers.
    database_url: str = Field(
        default=DEFAULT_DATABASE_URL, repr=False,
        description="SQLAlchemy URL; SQLite under ./.docpipe/ unless set.",
    )
    broker_url: str | None = Field(
        default=None, repr=False,
        description="Redis URL of the Celery broker. Unset: `docpipe run` starts an embedded "
        "Redis; other commands use redis://127.0.0.1:6379/0.",
    )
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "DOCPIPE_OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_BASE_URL", "DOCPIPE_OPENAI_BASE_URL")
    )

    worker_concurrency: int | None = Field(
        default=None, ge=1, description="threads pool: model calls in flight per worker "
        f"process, on its event loop (default {DEFAULT_CALLS_IN_FLIGHT}); prefork: pool "
        "processes, each with one group in flight (default: one per core).")
    worker_pool: Literal["threads", "prefork", "solo"] = Field(
        default="threads",
        description="Celery pool. threads: one process whose event loop keeps every call in "
        "flight; prefork: a process per group, for the hard memory limit.",
    )
    worker_processes: int | None = Field(
        default=None, ge=1, description="Worker processes `docpipe worker` starts, each "
        "with its own event loop (default: one per core).")
    group_size: int = Field(
        default=16, ge=1, le=500, description="Items per task message: a worker claims, "
        "admits and records a message's items together, paying the fixed costs once.")
    worker_max_memory_mb: int | None = Field(
        default=None, gt=0, description="Hard memory limit per pool process (prefork only): a "
        "process past it while handling a document kills itself and the call is recorded as "
        "lost to memory_limit, instead of the host's OOM killer taking the whole worker.")
    worker_liveness_seconds: float = Field(
        default=60.0, ge=0, description="A worker whose queues hold messages that it does not "
        "receive for this long, while it has free slots, restarts itself in place (a known "
        "Celery/kombu failure after broker restarts). 0 turns the check off.")
    model_limits: dict[str, ModelLimits] = Field(
        default_factory=dict,
        description="Per-model budgets as JSON, "
        'e.g. {"gpt-4.1-mini": {"rpm": 500, "tpm": 200000}}.',
    )

    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="Price overrides or additions, JSON: "
        '{"my-model": {"input": 1.0, "cached_input": 0.1, "output": 4.0}} (USD per 1M tokens).')

    prompt_cache_shards: int = Field(
        default=0, ge=0, description="prompt_cache_key lanes per pipeline version. 0: one "
        "per 15 requests a minute of the model's configured RPM (the rate one key keeps on one "
        "cache machine), at least one.")

    ratelimit_enabled: bool = Field(
        default=True, description="Pace calls with the fleet-wide Redis limiter.")
    ratelimit_burst_seconds: float = Field(
        default=1.0, gt=0, le=60, description="Budget a quiet key may spend at once, in seconds.")
    learned_limits_ttl_seconds: float = Field(
        default=600.0, gt=0, description="How long a budget learned from the API's "
        "x-ratelimit-limit-* headers (or their absence) stands without an answer that renews "
        "it; then one call probes the API again before the fleet goes on.")
    max_inline_wait_seconds: float = Field(
        default=5.0, ge=0, description="Longest wait for budget inside a task; longer waits "
        "park the item in the database.")
    breaker_window: int = Field(default=20, ge=1, description="Recent calls the breaker judges.")
    breaker_failure_ratio: float = Field(default=0.8, gt=0, le=1)
    breaker_min_calls: int = Field(default=10, ge=1)
    breaker_open_seconds: float = Field(default=5.0, gt=0)
    breaker_max_open_seconds: float = Field(default=120.0, gt=0)
    celery_task_rate_limit: str | None = Field(
        default=None, description="Celery's own per-worker rate_limit (e.g. '100/m'); only "
        "for comparison, since it does not add up across workers.")

    request_timeout_seconds: float = Field(default=120.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, description="API calls per item before it fails.")
    max_worker_losses: int = Field(
        default=3, ge=1, description="Times a worker may be lost (killed, out of memory, past "
        "its time limit) while holding one item before the item is quarantined as dead.")
    max_rate_limited_attempts: int = Field(
        default=20, ge=1, description="429 rate_limit_exceeded answers an item may get before "
        "it fails; they do not count against max_attempts.")
    retry_base_seconds: float = Field(default=1.0, gt=0)
    retry_max_seconds: float = Field(default=60.0, gt=0)

    max_countdown_seconds: float = Field(
        default=30.0, ge=0, description="Longest wait handed to the broker as a countdown. "
        "Longer waits (retries, breaker, budget) stay in the database, where the reconciler "
        "finds them: an ETA message is held unacked in a worker's memory.")
    reconcile_interval_seconds: float = Field(
        default=15.0, gt=0, description="How often beat runs the reconciler.")

    visibility_timeout_seconds: int = Field(default=3600, gt=0)
    task_soft_time_limit_seconds: int = Field(default=300, gt=0)
    task_time_limit_seconds: int = Field(default=360, gt=0)
    lease_seconds: int = Field(
        default=600, gt=0, description="How long a claimed item is held without its worker's "
        "heartbeat renewing it: the backstop for a live process hung on one item.")
    heartbeat_seconds: float = Field(
        default=5.0, gt=0, description="How often each worker process records that it is "
        "alive, renews the leases of the items it works on, and sweeps for dead holders.")
    holder_timeout_seconds: float = Field(
        default=30.0, gt=0, description="A worker process whose last heartbeat is older than "
        "this is dead: any worker's sweep voids its claims (each a lost worker) and sends its "
        "items again at once.")
    db_idle_transaction_seconds: float = Field(
        default=20.0, ge=0, description="PostgreSQL ends a session left idle inside a "
        "transaction this long (a stopped or hung worker), so it never holds a lock another "
        "worker waits on; also the longest a statement waits for a lock. Below the holder "
        "timeout, so a stopped holder's locks are gone when it is found dead. 0: no limit.")

    pipelines: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="User pipeline files (.toml, .yaml, .py) and folders of them, separated by "
        "commas or the path separator.",
    )

    schedules: dict[str, Schedule] = Field(
        default_factory=dict,
        description='Nightly runs, JSON: {"invoices-nightly": {"pipeline": "invoices", '
        '"cron": "0 2 * * *", "only": ["missing", "outdated"]}}. Beat starts each; a '
        "schedule's run never starts while its previous run is unfinished.",
    )
    batch_poll_seconds: float = Field(
        default=60.0, gt=0, description="How often beat sends waiting batch-mode items and "
        "collects ended batches.")
    batch_max_requests: int = Field(default=50_000, gt=0, le=50_000,
                                    description="Lines per Batch API input file.")
    batch_max_bytes: int = Field(default=200 * 1024 * 1024, gt=0, le=200 * 1024 * 1024,
                                 description="Bytes per Batch API input file.")
    beat_schedule_file: Path = Field(
        default=Path(".docpipe") / "celerybeat-schedule",
        description="Where beat keeps its schedule state between restarts.")

    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="Serve Prometheus metrics from each worker "
        "on this port (with the prefork pool, the sum over its processes). Unset: no metrics.")
    metrics_address: str = Field(
        default="127.0.0.1", description="Address the metrics endpoint binds; 0.0.0.0 in a "
        "container that Prometheus scrapes from outside.")
    metrics_dir: Path | None = Field(
        default=None, description="Folder for the pool processes' metric files; emptied at "
        "worker start. Unset: a fresh temporary folder per worker.")
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one JSON object a line, with run, item, request "
        "id and attempt where known.")

    flower_user: str | None = Field(default=None, description="Flower's basic-auth user.")
    flower_password: SecretStr | None = Field(default=None,
                                              description="Flower's basic-auth password.")
    flower_address: str = Field(default="127.0.0.1", description="Address Flower binds.")
    flower_port: int = Field(default=5555, ge=1, le=65535)
    flower_max_tasks: int = Field(
        default=20_000, gt=0, description="Tasks Flower keeps in memory: a nightly run sends "
        "hundreds of thousands, and Flower's default of 100,000 grows to gigabytes.")

    json_text_field: str = Field(default="text", description="Field holding a JSON record's text.")
    max_file_bytes: int = Field(default=50 * 1024 * 1024, gt=0)

    @field_validator("pipelines", mode="before")
    @classmethod
    def _split_paths(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = value.replace(os.pathsep, ",").split(",")
            return [part.strip() for part in parts if part.strip()]
        return value

    @field_validator("broker_url")
    @classmethod
    def _redis_broker(cls, value: str | None) -> str | None:
        # docpipe's transport, queue inspection and locks are Redis's: another Celery broker
        # would start and then fail at its first task.
        scheme = (value or "redis://").partition("://")[0].lower()
        if scheme not in REDIS_SCHEMES:
            raise ValueError(f"docpipe's broker is Redis: use redis://HOST:6379/0 (or "
                             f"rediss://), not {scheme}://")
        return value

    @model_validator(mode="after")
    def _check_timings(self) -> Self:
        # Redis redelivers any message unacked for visibility_timeout: a task or a retry delay
        # that reaches it runs twice.
        if self.worker_max_memory_mb is not None and self.worker_pool != "prefork":
            raise ValueError("worker_max_memory_mb needs worker_pool=prefork: a thread pool "
                             "shares one process, so one document would kill every call")
        if self.task_soft_time_limit_seconds >= self.task_time_limit_seconds:
            raise ValueError("task_soft_time_limit_seconds must be below task_time_limit_seconds")
        limit = self.visibility_timeout_seconds
        for name in ("task_time_limit_seconds", "retry_max_seconds", "lease_seconds",
                     "breaker_max_open_seconds", "max_countdown_seconds"):
            if getattr(self, name) >= limit:
                raise ValueError(
                    f"{name} ({getattr(self, name)}) must be below visibility_timeout_seconds "
                    f"({limit}), or Redis redelivers the task while it still runs"
                )
        if self.request_timeout_seconds + self.max_inline_wait_seconds >= \
                self.task_soft_time_limit_seconds:
            raise ValueError("request_timeout_seconds + max_inline_wait_seconds must be below "
                             "task_soft_time_limit_seconds")
        if self.heartbeat_seconds * 3 > self.holder_timeout_seconds:
            raise ValueError(
                f"holder_timeout_seconds ({self.holder_timeout_seconds}) must be at least three "
                f"heartbeat_seconds ({self.heartbeat_seconds}), or one slow heartbeat declares "
                "a live worker dead")
        if self.db_idle_transaction_seconds >= self.holder_timeout_seconds:
            raise ValueError(
                f"db_idle_transaction_seconds ({self.db_idle_transaction_seconds}) must be below "
                f"holder_timeout_seconds ({self.holder_timeout_seconds}), or a stopped holder "
                "still locks its items when it is found dead")
        if self.heartbeat_seconds * 2 > self.lease_seconds:
            raise ValueError(
                f"lease_seconds ({self.lease_seconds}) must be at least twice heartbeat_seconds "
                f"({self.heartbeat_seconds}), or a live worker's lease runs out between beats")
        return self

    def cache_shards(self, model: str) -> int:
        """How many ``prompt_cache_key`` lanes requests to ``model`` are spread over."""
        if self.prompt_cache_shards:
            return self.prompt_cache_shards
        limits = self.model_limits.get(model)
        return max(1, math.ceil(limits.rpm / REQUESTS_PER_CACHE_KEY)) if limits else 1

    @property
    def calls_in_flight(self) -> int:
        """Model calls one worker process keeps in flight (one pool process: one group)."""
        if self.worker_pool == "threads":
            return self.worker_concurrency or DEFAULT_CALLS_IN_FLIGHT
        return self.group_size

    @property
    def pool_concurrency(self) -> int:
        """Celery's ``--concurrency``: task threads (twice the groups that fill the calls in
        flight, so a group finishing its slowest call never leaves slots idle), or pool
        processes."""
        if self.worker_pool == "threads":
            return 2 * math.ceil(self.calls_in_flight / min(self.group_size,
                                                            self.calls_in_flight))
        if self.worker_pool == "solo":
            return 1
        return self.worker_concurrency or os.cpu_count() or 1

    @property
    def processes(self) -> int:
        """Worker processes ``docpipe worker`` runs."""
        return self.worker_processes or os.cpu_count() or 1

    @property
    def effective_broker_url(self) -> str:
        """The broker URL to connect to."""
        return self.broker_url or DEFAULT_BROKER_URL

    @property
    def uses_default_database(self) -> bool:
        """True when the database is the embedded SQLite default."""
        return self.database_url == DEFAULT_DATABASE_URL


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()


def redacted(url: str) -> str:
    """``url`` with its password shown as ``***``: the form every log line and message uses
    (database and broker URLs may carry one)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))
