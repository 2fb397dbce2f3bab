"""``docpipe results``: a run's documents, or a pipeline's results, as JSON lines or CSV."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import Any, TextIO

FORMATS = ("jsonl", "csv")

_RUN_COLUMNS = ("item_id", "source", "content_hash", "status", "reused", "error_class",
                "error_code", "error_message", "output")
_PIPELINE_COLUMNS = ("document_id", "source", "content_hash", "pipeline_version",
                     "created_at", "output")


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _run_record(row: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"item_id": row.item_id, "source": row.source,
                              "content_hash": row.content_hash, "status": row.status,
                              "reused": row.reused}
    if row.output is not None:
        record["output"] = row.output
    else:
        record["error"] = {"class": row.error_class, "code": row.error_code,
                           "message": row.error_message}
    return record


def write_run(stream: TextIO, fmt: str, rows: Iterable[Any]) -> None:
    """Each of a run's items: its output, or its error's class, code and message."""
    if fmt == "jsonl":
        for row in rows:
            stream.write(_json(_run_record(row)) + "\n")
        return
    writer = csv.writer(stream)
    writer.writerow(_RUN_COLUMNS)
    for row in rows:
        writer.writerow([row.item_id, row.source, row.content_hash, row.status, row.reused,
                         row.error_class, row.error_code, row.error_message,
                         _json(row.output) if row.output is not None else ""])


def write_pipeline(stream: TextIO, fmt: str, rows: Iterable[Any]) -> None:
    """Each document's result from one pipeline (its latest version, or the one asked)."""
    if fmt == "jsonl":
        for row in rows:
            stream.write(_json({
                "document_id": row.document_id, "source": row.source,
                "content_hash": row.content_hash, "pipeline_version": row.pipeline_version,
                "created_at": row.created_at.isoformat(), "output": row.output,
            }) + "\n")
        return
    writer = csv.writer(stream)
    writer.writerow(_PIPELINE_COLUMNS)
    for row in rows:
        writer.writerow([row.document_id, row.source, row.content_hash, row.pipeline_version,
                         row.created_at.isoformat(), _json(row.output)])
