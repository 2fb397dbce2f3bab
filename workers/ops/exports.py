"""``docpipe results``: a run's documents, or a pipeline's results, as JSON lines, CSV or
Parquet.

A run's export has one row a document (``document_results``, the SQL view): every path the
run was given, a duplicate too, with its status, its output or error, and what it cost.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import IO, Any

from workers.errors import ConfigurationError

FORMATS = ("jsonl", "csv", "parquet")
#: What ``-o``'s extension says, when ``--format`` does not.
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
              ".parquet": "parquet"}
#: A run's columns, in order (the view's, but its run id).
RUN_COLUMNS = ("item_id", "source", "content_hash", "status", "duplicate_of", "reused",
               "error_class", "error_code", "error_message", "calls", "input_tokens",
               "cached_tokens", "output_tokens", "reasoning_tokens", "cost_usd", "latency_ms",
               "model", "pipeline", "pipeline_version", "simulated", "output")
PIPELINE_COLUMNS = ("document_id", "source", "content_hash", "pipeline_version",
                     "created_at", "output")
#: Rows a Parquet row group holds: memory stays flat whatever the run's size.
ROW_GROUP = 10_000


def format_for(fmt: str | None, output: Path | None) -> str:
    """The format to write: ``--format`` if given, else what ``output``'s extension says
    (JSON lines to stdout).

    Raises:
        ConfigurationError: an unknown format or extension, or Parquet to the terminal.
    """
    if fmt is not None:
        if fmt not in FORMATS:
            raise ConfigurationError(f"--format takes {', '.join(FORMATS)}, not {fmt!r}")
    elif output is None:
        fmt = "jsonl"
    elif (fmt := EXTENSIONS.get(output.suffix.lower())) is None:
        known = ", ".join(EXTENSIONS)
        raise ConfigurationError(
            f"cannot tell the format of {output} from its extension: name it {known}, or "
            "pass --format jsonl, csv or parquet")
    if fmt == "parquet" and output is None:
        raise ConfigurationError("parquet is written to a file: pass -o FILE.parquet")
    return fmt


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _plain(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


def _run_record(row: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        name: _plain(getattr(row, name)) for name in RUN_COLUMNS
        if name not in ("output", "error_class", "error_code", "error_message")}
    if row.output is not None:
        record["output"] = row.output
    else:
        record["error"] = {"class": row.error_class, "code": row.error_code,
                           "message": row.error_message}
    return record


def _cell(value: Any) -> str:
    """A CSV cell: booleans as ``true``/``false``, nothing as empty, JSON as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return _json(value)
    return str(value)


def write_run(stream: IO[Any], fmt: str, rows: Iterable[Any]) -> None:
    """Each of a run's documents: its status, output or error, tokens, cost and calls.

    ``stream`` is text for JSON lines and CSV, binary for Parquet.
    """
    if fmt == "jsonl":
        for row in rows:
            stream.write(_json(_run_record(row)) + "\n")
    elif fmt == "csv":
        writer = csv.writer(stream)
        writer.writerow(RUN_COLUMNS)
        for row in rows:
            writer.writerow([_cell(getattr(row, name)) for name in RUN_COLUMNS])
    else:
        _write_parquet(stream, RUN_COLUMNS, rows)


def _parquet_types() -> dict[str, Any]:
    """The Parquet type of each column of both exports. The output is JSON text: a
    pipeline's output has a shape of its own, and every reader parses JSON."""
    import pyarrow as pa

    text, count, flag = pa.string(), pa.int64(), pa.bool_()
    return {
        "item_id": count, "document_id": count, "source": text, "content_hash": text,
        "status": text, "duplicate_of": text, "reused": flag, "error_class": text,
        "error_code": text, "error_message": text, "calls": count, "input_tokens": count,
        "cached_tokens": count, "output_tokens": count, "reasoning_tokens": count,
        "cost_usd": pa.decimal128(18, 9), "latency_ms": count, "model": text,
        "pipeline": text, "pipeline_version": text, "simulated": flag,
        "created_at": pa.timestamp("us", tz="UTC"), "output": text,
    }


def _write_parquet(stream: IO[bytes], columns: tuple[str, ...], rows: Iterable[Any]) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigurationError("parquet needs pyarrow: pip install 'docpipe[parquet]'") \
            from None
    types = _parquet_types()
    schema = pa.schema([(name, types[name]) for name in columns])
    nine_places = Decimal("1e-9")
    with pq.ParquetWriter(stream, schema) as writer:
        for group in _groups(rows, ROW_GROUP):
            values = {name: [getattr(row, name) for row in group] for name in columns}
            values["output"] = [None if v is None else _json(v) for v in values["output"]]
            if "cost_usd" in values:
                values["cost_usd"] = [Decimal(str(v)).quantize(nine_places)
                                      for v in values["cost_usd"]]
            writer.write_table(pa.table(values, schema=schema))


def _groups(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(rows)
    while group := list(islice(iterator, size)):
        yield group


def write_pipeline(stream: IO[Any], fmt: str, rows: Iterable[Any]) -> None:
    """Each document's result from one pipeline (its latest version, or the one asked)."""
    if fmt == "parquet":
        _write_parquet(stream, PIPELINE_COLUMNS, rows)
        return
    if fmt == "jsonl":
        for row in rows:
            stream.write(_json({
                "document_id": row.document_id, "source": row.source,
                "content_hash": row.content_hash, "pipeline_version": row.pipeline_version,
                "created_at": row.created_at.isoformat(), "output": row.output,
            }) + "\n")
        return
    writer = csv.writer(stream)
    writer.writerow(PIPELINE_COLUMNS)
    for row in rows:
        writer.writerow([row.document_id, row.source, row.content_hash, row.pipeline_version,
                         row.created_at.isoformat(), _json(row.output)])
