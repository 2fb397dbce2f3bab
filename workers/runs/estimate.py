"""What a run would cost, before anything is sent.

Reads the documents as ingest would, drops duplicates and documents whose result already
exists (they are reused at no cost), and plans each long document's chunks and reduces as
ingest does. The input tokens of every document and chunk request (overlap included) are
counted offline with o200k_base. A reduce call's input is its parts' answers, unknown before
they are written, so it is bounded: its instructions and schema, counted, plus
``max_output_tokens`` for each part (the parts go to the reduce as compact JSON, no longer
than the model wrote them). Output tokens cannot be known in advance: the ceiling gives every
call its ``max_output_tokens``, so a run's cost stays within it; the expected figure uses the
mean output of earlier successful calls of the same pipeline version when there are any.

Outside the bound: calls made again after a billed failure (a repair of a cut-off or invalid
answer, with twice the output room), which no estimate can foresee.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from pipelines import DocumentError, Pipeline
from pipelines.documents import SourceDocument
from pipelines.media import attachment_tokens
from pipelines.tokens import estimate_request_tokens
from workers.db import repository as repo
from workers.db.session import session_scope
from workers.errors import Usage
from workers.llm.pricing import PriceTable, Tier
from workers.runs.ingest import check_inputs, plan_document, read_paths
from workers.settings import Settings


@dataclass
class Estimate:
    """Predicted tokens and dollars of running ``pipeline`` over some documents."""

    pipeline: str
    pipeline_version: str
    model: str
    documents: int = 0
    unreadable: int = 0
    #: The sources that could not be read: path, code and why.
    unreadable_files: list[dict[str, str]] = field(default_factory=list)
    duplicates: int = 0
    already_done: int = 0
    #: Documents to send, and the calls that takes (a long document's chunks and reduces).
    to_call: int = 0
    calls: int = 0
    long_documents: int = 0
    #: Input tokens of the document and chunk requests, counted.
    input_tokens: int = 0
    #: Input tokens of the reduce calls, at most.
    reduce_input_tokens: int = 0
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
    shards = settings.cache_shards(pipeline.model)
    calls_by_hash: dict[str, _Calls] = {}
    for read in read_paths(paths, settings, reading=pipeline.reading):
        if isinstance(read, DocumentError):
            result.unreadable += 1
            result.unreadable_files.append(
                {"path": read.source, "code": read.code, "message": read.reason})
            continue
        result.documents += 1
        if read.content_hash in calls_by_hash:
            result.duplicates += 1
            continue
        calls_by_hash[read.content_hash] = _calls(read, pipeline, shards)
    if use_database and calls_by_hash:
        with session_scope() as session:
            done = repo.hashes_with_results(session, list(calls_by_hash), pipeline.version)
            mean, seen = repo.output_tokens_seen(session, pipeline.version)
        for content_hash in done:
            del calls_by_hash[content_hash]
        result.already_done = len(done)
        if seen:
            result.typical_output_tokens, result.calls_seen = mean, seen
    result.to_call = len(calls_by_hash)
    planned = calls_by_hash.values()
    result.calls = sum(c.calls for c in planned)
    result.long_documents = sum(1 for c in planned if c.reduces)
    result.input_tokens = sum(c.input_tokens for c in planned)
    overhead = sum(c.reduces for c in planned) * _reduce_overhead(pipeline, shards)
    parts = sum(c.parts for c in planned)
    result.reduce_input_tokens = overhead + parts * (pipeline.max_output_tokens + _SEPARATOR)
    result.max_output_tokens = result.calls * pipeline.max_output_tokens
    result.priced = prices.price_for(pipeline.model) is not None
    ceiling = Usage(input_tokens=result.input_tokens + result.reduce_input_tokens,
                    output_tokens=result.max_output_tokens)
    result.ceiling_usd = prices.cost(pipeline.model, ceiling)
    result.ceiling_batch_usd = prices.cost(pipeline.model, ceiling, tier=Tier.BATCH)
    if result.typical_output_tokens is not None:
        typical = result.typical_output_tokens
        result.expected_usd = prices.cost(pipeline.model, Usage(
            input_tokens=result.input_tokens + overhead + round(parts * typical),
            output_tokens=round(typical * result.calls)))
    return result


#: Tokens a part may add to a reduce's input beyond its answer: the comma between parts.
_SEPARATOR = 2


@dataclass(frozen=True)
class _Calls:
    """The calls one document takes: its requests' counted input, and its reduces."""

    calls: int
    input_tokens: int
    reduces: int = 0
    #: Answers the reduces read (each node but the root is read by one reduce).
    parts: int = 0


def _calls(read: SourceDocument, pipeline: Pipeline, shards: int) -> _Calls:
    # Media by their pixels, without encoding them or rendering scans; with the first chunk.
    media = sum(attachment_tokens(a, detail=pipeline.image_detail) for a in read.attachments)
    nodes = plan_document(read.text, pipeline)
    if nodes is None:
        return _Calls(1, media + estimate_request_tokens(
            pipeline.request(read.text, cache_shards=shards)))
    chunks = [n for n in nodes if n.level == 0]
    counted = sum(estimate_request_tokens(pipeline.request(
        read.text[n.start:n.end], cache_shards=shards)) for n in chunks)
    return _Calls(len(nodes), media + counted, reduces=len(nodes) - len(chunks),
                  parts=len(nodes) - 1)


def _reduce_overhead(pipeline: Pipeline, shards: int) -> int:
    """A reduce request's tokens around its parts: instructions, schema, framing."""
    return estimate_request_tokens(pipeline.reduce_request([], cache_shards=shards))
