"""SQLAlchemy 2.0 models. Alembic's migrations are the schema; these mirror them exactly."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum, nonmember
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Where the item states are defined, with their transitions; re-exported for the models.
from workers.clock import utcnow as utcnow
from workers.db.states import ItemStatus as ItemStatus

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always UTC-aware in Python, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite compares timestamps as text: store them all in one offset-free form.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    """Declarative base with constraint naming that Alembic can reproduce."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType}


class AttemptOutcome(StrEnum):
    """Attempt outcomes besides the error classes of :mod:`workers.errors`."""

    OK = "ok"
    IN_FLIGHT = "in_flight"  # written before the call, completed after it
    LOST = "lost"  # its process died during the call


class RunMode(StrEnum):
    """How a run's calls are sent: ``live`` (standard tier), ``flex`` (half price, slower,
    sometimes refused for lack of capacity) or ``batch`` (the Batch API: half price, within
    24 hours, submitted and collected by beat instead of workers)."""

    LIVE = "live"
    FLEX = "flex"
    BATCH = "batch"

    ALL = nonmember(("live", "flex", "batch"))


class RunStatus(StrEnum):
    """Run states."""

    INGESTING = "ingesting"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"

    ACTIVE = nonmember(("ingesting", "running"))


class Document(Base):
    """A unique piece of content; the same text from two files is one document."""

    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    source: Mapped[str] = mapped_column(Text)
    media_type: Mapped[str] = mapped_column(String(128))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    text: Mapped[str] = mapped_column(Text)
    #: How many rows of ``attachments`` it has: a claim reads them only when there are some.
    attachments: Mapped[int] = mapped_column(default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Attachment(Base):
    """An image, or a PDF with no text layer, that a document is (or includes)."""

    __tablename__ = "attachments"
    __table_args__ = (UniqueConstraint("document_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    position: Mapped[int]
    #: ``image`` or ``pdf`` (see pipelines.media.Attachment).
    kind: Mapped[str] = mapped_column(String(20))
    media_type: Mapped[str] = mapped_column(String(128))
    filename: Mapped[str] = mapped_column(Text)
    width: Mapped[int]
    height: Mapped[int]
    pages: Mapped[int]
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Run(Base):
    """One pass of one pipeline version over a set of documents."""

    __tablename__ = "runs"
    __table_args__ = (
        # At most one unfinished run per schedule: the lock that stops a nightly run from
        # starting while the previous one is still going.
        Index("uq_runs_unfinished_schedule", "schedule", unique=True,
              postgresql_where=text("schedule IS NOT NULL AND status != 'finished'"),
              sqlite_where=text("schedule IS NOT NULL AND status != 'finished'")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(100))
    pipeline_version: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(100))
    queue: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20), index=True)
    status_reason: Mapped[str | None] = mapped_column(Text)
    total_items: Mapped[int] = mapped_column(default=0)
    #: Counters snapshotted when the run finishes; live counts come from items.
    succeeded_items: Mapped[int] = mapped_column(default=0)
    failed_items: Mapped[int] = mapped_column(default=0)
    #: Dollars the run may spend; None: no limit. ``spent_usd`` and ``reserved_usd`` (the
    #: worst case of calls in flight) are kept only for runs with a budget.
    budget_usd: Mapped[Decimal | None] = mapped_column(Numeric(18, 9))
    spent_usd: Mapped[Decimal] = mapped_column(Numeric(18, 9), default=Decimal(0),
                                               server_default="0")
    reserved_usd: Mapped[Decimal] = mapped_column(Numeric(18, 9), default=Decimal(0),
                                                  server_default="0")
    #: The schedule that started the run (see ``DOCPIPE_SCHEDULES``), if one did.
    schedule: Mapped[str | None] = mapped_column(String(100))
    #: :class:`RunMode`: the service tier its calls are sent (and billed) at.
    mode: Mapped[str] = mapped_column(String(10), default="live", server_default="live")
    #: A batch run must be done by then: an item a new 24-hour batch could not bring back in
    #: time is sent live instead.
    deadline_at: Mapped[datetime | None]
    #: What an ingest reads, ``{"paths": [...], "cwd": "..."}`` (its paths as given, and
    #: the folder they were given in), so that an ingest cut off at any point can be
    #: finished by ``docpipe resume``; None for a reprocess run.
    sources: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: When every source was read and every item written; None while ingest has not ended
    #: (running, or cut off).
    ingested_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Item(Base):
    """One unit of work: one document (chunk) in one run."""

    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("run_id", "document_id", "chunk_index"),
        Index("ix_items_run_id_status", "run_id", "status"),
        Index("ix_items_status_not_before", "status", "not_before"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    document_id: Mapped[int | None] = mapped_column(ForeignKey("documents.id"), index=True)
    source: Mapped[str] = mapped_column(Text)
    chunk_index: Mapped[int] = mapped_column(default=0)
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(default=0)
    reused: Mapped[bool] = mapped_column(default=False)
    #: Time spent waiting for rate-limit budget or an open breaker, inline or parked.
    budget_wait_ms: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    #: Claims that found the item still running under an expired lease: its worker was lost
    #: (killed, out of memory, past its time limit) while holding it.
    worker_losses: Mapped[int] = mapped_column(default=0, server_default="0")
    #: The item's finished attempts (recorded or closed as lost), and what they cost together:
    #: kept as attempts finish, so ``status`` reads per-item costs from the item rows instead
    #: of grouping the attempts.
    calls: Mapped[int] = mapped_column(default=0, server_default="0")
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(18, 9), default=Decimal(0),
                                              server_default="0")
    result_id: Mapped[int | None] = mapped_column(ForeignKey("results.id"))
    #: Long documents become a tree (see pipelines.chunking.plan): chunks at level 0 with
    #: their span of the document's text, reduces above them. ``parent_id`` takes the result.
    level: Mapped[int] = mapped_column(default=0, server_default="0")
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE"), index=True)
    text_start: Mapped[int | None]
    text_end: Mapped[int | None]
    #: An item of a batch run that workers call live, to meet the run's deadline.
    send_live: Mapped[bool] = mapped_column(default=False, server_default=false())
    #: The Batch API batch the item was last sent in (batch runs only).
    batch_id: Mapped[int | None] = mapped_column(
        ForeignKey("batches.id", ondelete="SET NULL"), index=True)
    last_error_class: Mapped[str | None] = mapped_column(String(50))
    last_error_code: Mapped[str | None] = mapped_column(String(100))
    last_error_message: Mapped[str | None] = mapped_column(Text)
    lease_expires_at: Mapped[datetime | None]
    #: The worker process that last claimed the item (its heartbeat token, see
    #: :class:`WorkerProcess`): only it may write the item's answer while it runs.
    holder: Mapped[str | None] = mapped_column(String(100))
    not_before: Mapped[datetime | None]
    queued_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class WorkerProcess(Base):
    """A live worker process, as its heartbeats say: one row per process start."""

    __tablename__ = "worker_processes"

    #: ``host:pid:nonce``, new at each start of the process (an exec keeps the pid).
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    beat_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class BatchStatus(StrEnum):
    """A docpipe batch's states. Provider states in between are kept as they come."""

    SUBMITTING = "submitting"  # items marked, file not yet accepted
    SUBMIT_FAILED = "submit_failed"  # the upload or creation failed; items went back
    INGESTED = "ingested"  # ended at the provider, every line taken into the database

    PROVIDER_ENDED = nonmember(("completed", "expired", "failed", "cancelled"))


class Batch(Base):
    """One Batch API batch: a JSONL file of items of one run, sent together."""

    __tablename__ = "batches"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(20), index=True)
    provider_batch_id: Mapped[str | None] = mapped_column(String(100))
    input_file_id: Mapped[str | None] = mapped_column(String(100))
    output_file_id: Mapped[str | None] = mapped_column(String(100))
    error_file_id: Mapped[str | None] = mapped_column(String(100))
    items: Mapped[int]
    input_bytes: Mapped[int] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class Attempt(Base):
    """One HTTP call to the model API, successful or not, with what it cost."""

    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    model: Mapped[str] = mapped_column(String(100))
    #: See :class:`AttemptOutcome`; otherwise the error class of a failed call.
    outcome: Mapped[str] = mapped_column(String(30))
    #: ``host:pid`` of the process that made the call.
    worker: Mapped[str | None] = mapped_column(String(255))
    http_status: Mapped[int | None]
    error_code: Mapped[str | None] = mapped_column(String(100))
    error_message: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(100))
    response_id: Mapped[str | None] = mapped_column(String(100))
    started_at: Mapped[datetime]
    latency_ms: Mapped[int]
    input_tokens: Mapped[int] = mapped_column(default=0)
    cached_tokens: Mapped[int] = mapped_column(default=0)
    output_tokens: Mapped[int] = mapped_column(default=0)
    reasoning_tokens: Mapped[int] = mapped_column(default=0)
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(18, 9), default=Decimal(0))
    #: The worst-case cost held against the run's budget while the call was in flight.
    reserved_usd: Mapped[Decimal] = mapped_column(Numeric(18, 9), default=Decimal(0),
                                                  server_default="0")
    #: Answered by docpipe's simulator (its ``x-docpipe-simulator`` header), not a model.
    simulated: Mapped[bool] = mapped_column(default=False, server_default=false())


class RunDuplicate(Base):
    """A path of a run whose content another path of the run brought first: it gets no item
    of its own (nothing is paid twice) and shares that item's result."""

    __tablename__ = "run_duplicates"
    __table_args__ = (UniqueConstraint("run_id", "source"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"))
    source: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Result(Base):
    """The validated output for one (content, pipeline version, chunk): never two."""

    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("content_hash", "pipeline_version", "chunk_index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    pipeline_version: Mapped[str] = mapped_column(String(32))
    chunk_index: Mapped[int] = mapped_column(default=0)
    pipeline: Mapped[str] = mapped_column(String(100))
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"), index=True)
    #: The item whose call produced this result (not a foreign key: items point here).
    item_id: Mapped[int | None]
    output: Mapped[dict[str, Any]]
    model: Mapped[str] = mapped_column(String(100))
    response_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


#: SQL views, made by the migrations (see ``migrations/versions``), outside ``Base.metadata``
#: so that nothing ever creates them as tables: read-only, for queries.
views = MetaData()

#: One row per path a run was given: its document's status, output or error, and its calls'
#: tokens, cost and latency summed over a long document's chunks and reduces. A duplicate
#: path (``duplicate_of`` names the path it matched) carries that document's status and
#: output, and none of its usage (paid once, on the first path's row). What
#: ``docpipe results RUN`` exports; the README describes each column.
document_results = Table(
    "document_results", views,
    Column("run_id", Integer), Column("item_id", Integer), Column("source", Text),
    Column("duplicate_of", Text), Column("content_hash", String(64)),
    Column("status", String(20)), Column("error_class", String(50)),
    Column("error_code", String(100)), Column("error_message", Text),
    Column("reused", Boolean), Column("calls", BigInteger),
    Column("input_tokens", BigInteger), Column("cached_tokens", BigInteger),
    Column("output_tokens", BigInteger), Column("reasoning_tokens", BigInteger),
    Column("cost_usd", Numeric(18, 9)), Column("latency_ms", BigInteger),
    Column("simulated", Boolean), Column("model", String(100)),
    Column("pipeline", String(100)), Column("pipeline_version", String(32)),
    Column("output", JSONType),
)
