"""What an item sends: a long document's scanned pages go with its first chunk only."""

from __future__ import annotations

from typing import Any

from pipelines import Pipeline
from pipelines.documents import read_bytes
from tests.support.files import make_mixed_pdf
from workers.db import repository as repo
from workers.items.requests import request_body
from workers.settings import Settings

SCHEMA = {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"],
          "additionalProperties": False}


def parts_of(body: dict[str, Any]) -> list[str]:
    return [part["type"] for part in body["input"][0]["content"]]


def test_only_the_first_chunk_sends_the_documents_scanned_pages() -> None:
    (document,) = read_bytes("deck.pdf", make_mixed_pdf(
        [("Quarterly revenue rose on stronger subscriptions.", False), ("Chart", True)]),
        "application/pdf")
    assert not isinstance(document, Exception) and len(document.attachments) == 1
    pipeline = Pipeline(name="p", model="m", instructions="i", output_schema=SCHEMA)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    def chunk(index: int | None) -> repo.ClaimedItem:
        span = (None, None) if index is None else (10 * index, 10 * index + 10)
        return repo.ClaimedItem(
            id=1, run_id=1, attempts=0, chunk_index=-1 if index is None else index,
            pipeline="p", pipeline_version=pipeline.version, model="m", document_id=1,
            content_hash=document.content_hash, text=document.text, text_start=span[0],
            text_end=span[1], attachments=document.attachments)

    assert parts_of(request_body(chunk(None), pipeline, settings)) == [
        "input_text", "input_file", "input_text"]
    assert parts_of(request_body(chunk(0), pipeline, settings)) == [
        "input_text", "input_file", "input_text"]
    assert parts_of(request_body(chunk(1), pipeline, settings)) == ["input_text"]
