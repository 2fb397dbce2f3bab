"""Splitting a long document into chunks that each fit a pipeline's input budget.

Chunks are measured in o200k_base tokens and cut on the most natural boundary that fits:
headings and paragraphs first, then sentences, then lines, and only as a last resort inside
a sentence (on a token boundary). Each chunk after the first repeats the end of the one
before it (``overlap`` tokens, whole sentences where possible), so a fact split across a
boundary is seen whole at least once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from pipelines.tokens import count_tokens, encode, encoding

#: Boundaries from the coarsest to the finest: a heading or blank line, a sentence end, a line.
_SEPARATORS = (
    re.compile(r"\n\s*\n|\n(?=#{1,6} )"),
    re.compile(r"(?<=[.!?。！？])\s+"),
    re.compile(r"\n"),
)
#: Share of the budget filled by the packer, which adds up per-piece counts: BPE merges
#: across a join can make the whole a few tokens longer than its parts. Every chunk is then
#: counted exactly, and split again if it is still over.
_FILL = 0.95


@dataclass(frozen=True)
class Chunk:
    """One piece of a document: its text, where it starts and ends, and its token count."""

    index: int
    text: str
    start: int
    end: int
    tokens: int


def split(text: str, *, max_tokens: int, overlap: int = 0) -> list[Chunk]:
    """Split ``text`` into chunks of at most ``max_tokens`` tokens; see the module docstring.

    ``start``/``end`` are character offsets into ``text``; without overlap the chunks tile it
    exactly. A text that fits is one chunk.

    Raises:
        ValueError: if ``max_tokens`` is below 16 or ``overlap`` is not below half of it.
    """
    if max_tokens < 16:
        raise ValueError("max_tokens must be at least 16")
    if not 0 <= overlap < max_tokens // 2:
        raise ValueError("overlap must be at least 0 and below half of max_tokens")
    total = count_tokens(text)
    if total <= max_tokens:
        return [Chunk(0, text, 0, len(text), total)]
    pieces = list(_pieces(text, 0, len(text), int((max_tokens - overlap) * _FILL), 0))
    spans = _pack(pieces, int((max_tokens - overlap) * _FILL))
    chunks: list[Chunk] = []
    for start, end in spans:
        lead = _overlap_start(text, pieces, start, overlap) if chunks and overlap else start
        for piece_start, piece_end in _fit(text, lead, end, max_tokens):
            body = text[piece_start:piece_end]
            chunks.append(Chunk(len(chunks), body, piece_start, piece_end, count_tokens(body)))
    return chunks


def _pieces(text: str, start: int, end: int, budget: int, level: int
            ) -> Iterator[tuple[int, int, int]]:
    """(start, end, tokens) spans no longer than ``budget``, split at the coarsest boundary."""
    tokens = count_tokens(text[start:end])
    if tokens <= budget:
        yield start, end, tokens
        return
    if level == len(_SEPARATORS):
        yield from _token_cut(text, start, end, budget)
        return
    cuts = [m.end() for m in _SEPARATORS[level].finditer(text, start, end)]
    if not cuts:
        yield from _pieces(text, start, end, budget, level + 1)
        return
    for left, right in zip([start, *cuts], [*cuts, end], strict=True):
        if left < right:
            yield from _pieces(text, left, right, budget, level + 1)


def _token_cut(text: str, start: int, end: int, budget: int) -> Iterator[tuple[int, int, int]]:
    """Cut a boundary-less run of text every ``budget`` tokens."""
    enc = encoding()
    ids = encode(text[start:end])
    position = start
    for first in range(0, len(ids), budget):
        piece = enc.decode(ids[first : first + budget])
        # Decoding may not give back a prefix (a multi-byte character split across tokens):
        # fall back to the remaining text's length so the spans still tile the text.
        stop = min(end, position + len(piece)) if text.startswith(piece, position) else end
        if first + budget >= len(ids):
            stop = end
        yield position, stop, count_tokens(text[position:stop])
        position = stop
        if position >= end:
            return


def _pack(pieces: list[tuple[int, int, int]], budget: int) -> list[tuple[int, int]]:
    """Greedy: as many consecutive pieces per chunk as fit ``budget``."""
    spans: list[tuple[int, int]] = []
    start, used = pieces[0][0], 0
    for piece_start, _, tokens in pieces:
        if used and used + tokens > budget:
            spans.append((start, piece_start))
            start, used = piece_start, 0
        used += tokens
    spans.append((start, pieces[-1][1]))
    return spans


def _overlap_start(text: str, pieces: list[tuple[int, int, int]], start: int,
                   overlap: int) -> int:
    """Where a chunk starting at ``start`` begins once ``overlap`` tokens of before are added."""
    used, lead = 0, start
    for piece_start, piece_end, tokens in reversed(pieces):
        if piece_end > start:
            continue
        if used + tokens > overlap:
            if used == 0:  # one long piece: take its tail, on a word boundary
                tail = encoding().decode(encode(text[piece_start:piece_end])[-overlap:])
                cut = text.rfind(tail, piece_start, piece_end)
                if cut >= 0:
                    space = text.find(" ", cut, piece_end)
                    lead = space + 1 if 0 <= space < piece_end - 1 else cut
            break
        used += tokens
        lead = piece_start
    return lead


def _fit(text: str, start: int, end: int, max_tokens: int) -> Iterator[tuple[int, int]]:
    """``(start, end)``, halved until every part counts at most ``max_tokens`` exactly."""
    if count_tokens(text[start:end]) <= max_tokens or end - start < 2:
        yield start, end
        return
    middle = text.rfind(" ", start + 1, (start + end) // 2 + 1)
    middle = middle if middle > start else (start + end) // 2
    yield from _fit(text, start, middle, max_tokens)
    yield from _fit(text, middle, end, max_tokens)


@dataclass(frozen=True)
class Node:
    """One call in the processing of a long document: a chunk, or a reduce of others.

    ``key`` identifies the node within its document (and its result): chunks are numbered
    0, 1, 2... in document order, reduce nodes -1 (the root, whose result is the whole
    document's), -2, -3... ``parent`` is the key of the reduce node that takes this one's
    result. Nodes are listed parents first, and children in document order.
    """

    key: int
    level: int
    parent: int | None
    start: int = 0
    end: int = 0


def plan(text: str, *, max_tokens: int, overlap: int, fan_in: int) -> list[Node] | None:
    """The tree of calls for ``text``: chunks, then reduces of ``fan_in`` results at a time.

    None when the text fits in one call. The tree's depth is ceil(log_fan_in(chunks)), so a
    document finishes in about that many rounds of calls after its chunks, however long.
    """
    if fan_in < 2:
        raise ValueError("fan_in must be at least 2")
    if len(text.encode()) <= max_tokens:  # a token is at least a byte: fits, without counting
        return None
    chunks = split(text, max_tokens=max_tokens, overlap=overlap)
    if len(chunks) == 1:
        return None
    # Build bottom-up in groups of fan_in, then number reduce nodes from the root down.
    levels: list[list[list[int]]] = []  # per level above the chunks: groups of child indexes
    width = len(chunks)
    while width > 1:
        # As even as possible: 9 results at a fan-in of 8 make groups of 5 and 4, not 8 and 1.
        count = -(-width // fan_in)
        bounds = [width * g // count for g in range(count + 1)]
        groups = [list(range(bounds[g], bounds[g + 1])) for g in range(count)]
        levels.append(groups)
        width = len(groups)
    keys: dict[tuple[int, int], int] = {}  # (level, index) -> key of a reduce node
    nodes: list[Node] = []
    parent_of: dict[tuple[int, int], int | None] = {(len(levels), 0): None}
    next_key = -1
    for level in range(len(levels), 0, -1):
        for index, children in enumerate(levels[level - 1]):
            key = keys[(level, index)] = next_key
            next_key -= 1
            nodes.append(Node(key, level, parent_of[(level, index)]))
            for child in children:
                parent_of[(level - 1, child)] = key
    for chunk in chunks:
        nodes.append(Node(chunk.index, 0, parent_of[(0, chunk.index)], chunk.start, chunk.end))
    return nodes
