"""What an item sends: the ``POST /v1/responses`` body, the same live and in a batch."""

from __future__ import annotations

from typing import Any

from pipelines import Pipeline
from pipelines.models import limits
from workers.db import repository as repo
from workers.db.models import RunMode
from workers.db.session import session_scope
from workers.errors import BadOutputError
from workers.settings import Settings

#: A truncation repair doubles max_output_tokens, up to this (or the model's own limit).
MAX_REPAIR_OUTPUT_TOKENS = 32_768


def request_body(item: repo.ClaimedItem, pipeline: Pipeline, settings: Settings
                 ) -> dict[str, Any]:
    """The ``POST /v1/responses`` body for an item, live or in a batch.

    A chunk sends its span of the text (the first, the document's scanned pages too); a
    reduce, its parts' results; a flex run asks for the
    flex tier; a repair of a cut-off answer gets twice the room.

    Raises:
        DocumentError: the pipeline does not send this document's scan, or cannot render it.
    """
    shards = settings.cache_shards(pipeline.model)
    if item.level > 0:
        with session_scope() as session:
            parts = repo.part_outputs(session, item.id)
        body = pipeline.reduce_request(parts, cache_shards=shards)
    else:
        text = item.text if item.text_start is None else item.text[item.text_start:item.text_end]
        # A long document's scanned pages go with its first chunk, not with every chunk.
        whole = item.text_start is None or item.chunk_index == 0
        body = pipeline.request(text, cache_shards=shards,
                                attachments=item.attachments if whole else ())
    if item.mode == RunMode.FLEX:
        body["service_tier"] = "flex"
    if item.last_error_class == BadOutputError.error_class and \
            item.last_error_code == "truncated":
        model = limits(pipeline.model)
        most = min(MAX_REPAIR_OUTPUT_TOKENS, model.max_output_tokens) if model \
            else MAX_REPAIR_OUTPUT_TOKENS
        body["max_output_tokens"] = max(int(body["max_output_tokens"]),
                                        min(2 * int(body["max_output_tokens"]), most))
    return body
