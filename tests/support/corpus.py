"""Documents and pipeline definitions the tests write to disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from pipelines import get_pipeline
from tests.support.stack import Stack
from workers.db.models import Document, Item
from workers.db.session import session_scope
from workers.simulator import input_key

WORDS = ("contract invoice report revenue supplier warehouse shipment quarter payment customer "
         "audit budget forecast license renewal").split()


def write_corpus(folder: Path, count: int) -> list[Path]:
    """``count`` distinct short business documents, half .txt and half .md."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        body = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(20 + i % 50))
        text = (f"Document {i} from Northwind Traders Inc to Contoso Systems Ltd, dated "
                f"{1 + i % 28} March 2025.\nThe total is ${100 + i}.50. {body.capitalize()}.\n")
        path = folder / f"doc-{i:04d}.{('txt', 'md')[i % 2]}"
        path.write_text(text)
        paths.append(path)
    return paths


def input_keys(stack: Stack, item_ids: list[int], pipeline: str) -> dict[int, str]:
    chosen = get_pipeline(pipeline)
    with session_scope(stack.database_url) as s:
        rows = s.execute(select(Item.id, Document.text).join(Document, Document.id ==
                                                               Item.document_id)
                         .where(Item.id.in_(item_ids)))
        return {item_id: input_key(chosen.request(text)) for item_id, text in rows}


CLAUSE = ("Clause {n}.{k}: the supplier Northwind Traders Inc shall deliver {k} pallets to "
          "Contoso Systems Ltd in Leeds by {day} March 2025, at $1{n:03d}.00 a pallet; late "
          "delivery costs two percent a week.")


def contract(pages: int) -> str:
    return "\n\n".join(
        f"# Page {n}\n\n" + "\n\n".join(CLAUSE.format(n=n, k=k, day=1 + n % 28)
                                        for k in range(14))
        for n in range(pages))


INVOICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "number": {"type": "string"},
        "total": {"type": "number"},
        "currency": {"type": ["string", "null"]},
        "lines": {"type": "array", "items": {
            "type": "object",
            "properties": {"item": {"type": "string"}, "amount": {"type": "number"}},
            "required": ["item", "amount"], "additionalProperties": False}},
    },
    "required": ["number", "total", "currency", "lines"],
    "additionalProperties": False,
}


INVOICES_TOML = '''
name = "invoices"
model = "gpt-4.1-mini"
description = "Invoice numbers, totals and lines."
instructions = """Extract the invoice's number, total, currency and lines."""
max_output_tokens = 800
temperature = 0
schema_name = "Invoice"
max_input_tokens = 8000
image_detail = "low"
schema_file = "invoice.schema.json"
'''


def write_invoices(folder: Path, *, instructions: str | None = None) -> Path:
    path = folder / "invoices.toml"
    text = INVOICES_TOML
    if instructions is not None:
        text = text.replace("Extract the invoice's number, total, currency and lines.",
                            instructions)
    path.write_text(text)
    (folder / "invoice.schema.json").write_text(json.dumps(INVOICE_SCHEMA))
    return path
