"""What a run would cost, before anything is sent.

Reads the documents as ingest would, drops duplicates and documents whose result already
exists (they are reused at no cost), and counts each request's input tokens offline with
o200k_base. Output tokens cannot be known in advance: the estimate uses the mean of earlier
successful calls of the same pipeline version when there are any, and shows the ceiling of
every answer using ``max_output_tokens`` either way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from pipelines import DocumentError, Pipeline
from pipelines.media import attachment_tokens
from pipelines.tokens import estimate_request_tokens
from workers.db import repository as repo
from workers.db.session import session_scope
from workers.errors import Usage
from workers.llm.pricing import PriceTable, Tier
from workers.runs.ingest import check_inputs, read_paths
from workers.settings import Settings


@dataclass
class Estimate:
    """Predicted tokens and dollars of running ``pipeline`` over some documents."""

    pipeline: str
    pipeline_version: str
    model: str
    documents: int = 0
    unreadable: int = 0
    duplicates: int = 0
    already_done: int = 0
    to_call: int = 0
    input_tokens: int = 0
    max_output_tokens: int = 0
    #: Mean output tokens of earlier calls of this version, and how many calls that is.
    typical_output_tokens: float | None = None
    calls_seen: int = 0
    expected_usd: Decimal | None = None
    ceiling_usd: Decimal = Decimal(0)
    ceiling_batch_usd: Decimal = Decimal(0)
    priced: bool = True

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: what ``docpipe estimate --json`` prints."""
        return {k: float(v) if isinstance(v, Decimal) else v for k, v in asdict(self).items()}


def estimate(paths: Iterable[str], pipeline: Pipeline, *, settings: Settings,
             prices: PriceTable, use_database: bool = True) -> Estimate:
    """Estimate a run of ``pipeline`` over ``paths``; see the module docstring.

    Raises:
        NoSuchInput: a path matches no file.
    """
    paths = list(paths)
    check_inputs(paths)
    result = Estimate(pipeline.name, pipeline.version, pipeline.model)
    tokens_by_hash: dict[str, int] = {}
    for read in read_paths(paths, settings, reading=pipeline.reading):
        if isinstance(read, DocumentError):
            result.unreadable += 1
            continue
        result.documents += 1
        if read.content_hash in tokens_by_hash:
            result.duplicates += 1
            continue
        # Media by their pixels, without encoding them or rendering scans.
        tokens_by_hash[read.content_hash] = estimate_request_tokens(pipeline.request(
            read.text, cache_shards=settings.cache_shards(pipeline.model))) + sum(
            attachment_tokens(a, detail=pipeline.image_detail) for a in read.attachments)
    if use_database and tokens_by_hash:
        with session_scope() as session:
            done = repo.hashes_with_results(session, list(tokens_by_hash), pipeline.version)
            mean, seen = repo.output_tokens_seen(session, pipeline.version)
        for content_hash in done:
            del tokens_by_hash[content_hash]
        result.already_done = len(done)
        if seen:
            result.typical_output_tokens, result.calls_seen = mean, seen
    result.to_call = len(tokens_by_hash)
    result.input_tokens = sum(tokens_by_hash.values())
    result.max_output_tokens = result.to_call * pipeline.max_output_tokens
    result.priced = prices.price_for(pipeline.model) is not None
    ceiling = Usage(input_tokens=result.input_tokens, output_tokens=result.max_output_tokens)
    result.ceiling_usd = prices.cost(pipeline.model, ceiling)
    result.ceiling_batch_usd = prices.cost(pipeline.model, ceiling, tier=Tier.BATCH)
    if result.typical_output_tokens is not None:
        typical = round(result.typical_output_tokens * result.to_call)
        result.expected_usd = prices.cost(pipeline.model, Usage(
            input_tokens=result.input_tokens, output_tokens=typical))
    return result
