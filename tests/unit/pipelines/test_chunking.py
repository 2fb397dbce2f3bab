"""Chunks always fit, tile the document, overlap when asked, and cut on natural boundaries."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.chunking import plan, split
from pipelines.tokens import count_tokens

PARAGRAPH = ("The supplier shall deliver the goods by the first of each month. Late delivery "
             "incurs a penalty of two percent per week. Either party may end the contract "
             "with ninety days of notice in writing.")

documents = st.text(alphabet=st.sampled_from(list("abcdefgh ijk.\n\n#é日本")), min_size=0,
                    max_size=3000)


@settings(max_examples=60, deadline=None)
@given(documents, st.integers(min_value=16, max_value=300))
def test_chunks_fit_and_tile_the_text_exactly(text: str, max_tokens: int) -> None:
    chunks = split(text, max_tokens=max_tokens)
    assert all(c.tokens <= max_tokens and c.tokens == count_tokens(c.text) for c in chunks)
    assert "".join(c.text for c in chunks) == text
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    assert all(a.end == b.start for a, b in zip(chunks, chunks[1:], strict=False))
    assert [c.index for c in chunks] == list(range(len(chunks)))


@settings(max_examples=40, deadline=None)
@given(documents, st.integers(min_value=40, max_value=300), st.integers(0, 19))
def test_with_overlap_every_chunk_fits_and_each_boundary_is_covered(
        text: str, max_tokens: int, overlap: int) -> None:
    chunks = split(text, max_tokens=max_tokens, overlap=overlap)
    assert all(c.tokens <= max_tokens for c in chunks)
    assert all(c.text == text[c.start:c.end] for c in chunks)
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert before.start < after.start <= before.end  # no gap, always progress


def test_a_text_that_fits_is_one_chunk() -> None:
    chunks = split(PARAGRAPH, max_tokens=1000)
    assert len(chunks) == 1 and chunks[0].text == PARAGRAPH


def test_paragraphs_are_kept_whole_when_they_fit() -> None:
    text = "\n\n".join(f"## Clause {i}\n\n{PARAGRAPH}" for i in range(40))
    chunks = split(text, max_tokens=200)
    assert len(chunks) > 5
    for chunk in chunks[:-1]:
        assert chunk.text.endswith("\n\n"), "a chunk ends at a paragraph boundary"


def test_overlap_repeats_whole_sentences_from_the_chunk_before() -> None:
    text = " ".join(f"Sentence number {i} states one fact." for i in range(300))
    chunks = split(text, max_tokens=120, overlap=20)
    for before, after in zip(chunks, chunks[1:], strict=False):
        shared = text[after.start:before.end]
        assert 0 < count_tokens(shared) <= 20 + 10
        assert shared.startswith("Sentence"), "the overlap starts at a sentence"


def test_a_300_page_document() -> None:
    page = "\n\n".join([PARAGRAPH] * 13)  # about 500 words, a printed page
    text = "\n\n".join(f"# Page {n}\n\n{page}" for n in range(300))
    chunks = split(text, max_tokens=8000, overlap=200)
    total = count_tokens(text)
    assert total > 140_000
    assert all(c.tokens <= 8000 for c in chunks)
    assert total / 8000 <= len(chunks) <= total / 7000 + 2


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        split("x", max_tokens=8)
    with pytest.raises(ValueError, match="overlap"):
        split("x", max_tokens=100, overlap=50)


def test_a_1000_page_document_beyond_the_tokenizers_single_call_limit() -> None:
    page = "\n\n".join([PARAGRAPH] * 13)
    text = "\n\n".join(f"# Page {n}\n\n{page}" for n in range(1000))
    assert len(text) > 1_000_000  # bpe-openai refuses this in one call
    chunks = split(text, max_tokens=8000, overlap=200)
    assert all(c.tokens <= 8000 for c in chunks) and chunks[-1].end == len(text)
    by_page = sum(count_tokens(f"# Page {n}\n\n{page}") for n in range(1000))
    assert abs(count_tokens(text) - by_page) <= 2 * 1000  # a join costs a token or two


class TestPlan:
    def text(self, pages: int) -> str:
        page = "\n\n".join([PARAGRAPH] * 13)
        return "\n\n".join(f"# Page {n}\n\n{page}" for n in range(pages))

    def test_a_text_that_fits_needs_no_tree(self) -> None:
        assert plan(PARAGRAPH, max_tokens=1000, overlap=0, fan_in=4) is None

    @pytest.mark.parametrize(("pages", "fan_in"), [(300, 8), (300, 2), (40, 3)])
    def test_one_root_every_node_under_it_and_fan_in_respected(self, pages: int,
                                                               fan_in: int) -> None:
        text = self.text(pages)
        nodes = plan(text, max_tokens=8000, overlap=200, fan_in=fan_in)
        assert nodes is not None
        by_key = {n.key: n for n in nodes}
        assert len(by_key) == len(nodes)
        roots = [n for n in nodes if n.parent is None]
        assert [r.key for r in roots] == [-1] and roots[0].level == max(n.level for n in nodes)
        children: dict[int, list[int]] = {}
        for node in nodes:
            if node.parent is not None:
                assert by_key[node.parent].level > node.level
                children.setdefault(node.parent, []).append(node.key)
            seen_parent = node.parent is None or nodes.index(by_key[node.parent]) < \
                nodes.index(node)
            assert seen_parent, "parents are listed before their children"
        sizes = [len(c) for c in children.values()]
        assert max(sizes) <= fan_in
        assert min(sizes) >= 2 or fan_in == 2, "groups are even, never a lone straggler"
        leaves = [n for n in nodes if n.level == 0]
        assert [n.key for n in leaves] == list(range(len(leaves)))
        assert leaves[0].start == 0 and leaves[-1].end == len(text)
        depth = roots[0].level
        assert fan_in ** (depth - 1) < len(leaves) <= fan_in ** depth
