"""What differs between PostgreSQL and SQLite, and the bulk-write constants."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    Numeric,
    String,
    Table,
    Text,
    any_,
    bindparam,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import Insert as PostgresInsert
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

#: The smallest amount the money columns hold (9 decimal places).
MONEY_EPSILON = Decimal("0.000000001")


#: Rows per statement in bulk writes.
BATCH = 500


#: A retry message may arrive this early against the database clock and still be honoured.
CLOCK_SKEW = timedelta(seconds=2)


def insert_for(session: Session, model: type[Any]) -> PostgresInsert | SqliteInsert:
    """An INSERT for ``model`` in the dialect of ``session`` (both have on_conflict_do_nothing)."""
    if is_postgres(session):
        return postgres_insert(model)
    return sqlite_insert(model)


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def any_in(session: Session, column: Any, values: Sequence[Any], element: Any) -> Any:
    """``column IN values``; on PostgreSQL ``= ANY(array)``, one parameter however many.

    An IN list of 500 placeholders is a new query text for psycopg to parse on every call.
    """
    if is_postgres(session):
        return column == any_(bindparam("values", list(values), type_=ARRAY(element), unique=True))
    return column.in_(values)


#: (column, array element type) of the bulk inserts' ``unnest`` parameters.
DOCUMENT_ARRAYS = (("content_hash", String), ("source", Text), ("media_type", String),
                    ("size_bytes", BigInteger), ("text", Text), ("attachments", Integer))


ITEM_ARRAYS = (("document_id", BigInteger), ("source", Text))
ATTEMPT_ARRAYS = (("item_id", BigInteger), ("run_id", BigInteger), ("model", String),
                  ("reserved_usd", Numeric(18, 9)))
RESULT_ARRAYS = (("content_hash", String), ("pipeline_version", String),
                 ("chunk_index", Integer), ("pipeline", String), ("document_id", BigInteger),
                 ("item_id", BigInteger), ("output", Text), ("model", String),
                 ("response_id", String))


def table_of(model: type[Any]) -> Table:
    return model.metadata.tables[model.__tablename__]  # type: ignore[no-any-return]


def unnest(arrays: Sequence[tuple[str, Any]]) -> Any:
    """A table of one row per array index, from one ARRAY parameter per column."""
    return func.unnest(*(bindparam(name, type_=ARRAY(element)) for name, element in arrays)
                       ).table_valued(*(name for name, _ in arrays)).render_derived()
