"""The DOCX reader: every part Word shows, once, in reading order."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.documents import SourceDocument, normalise, read_bytes
from pipelines.docx import docx_text
from pipelines.errors import DocumentError
from tests.support import ooxml
from tests.support.extraction import DOCX, Sample, docx_corpus, parts_found, precision, recall
from tests.support.files import make_docx


@pytest.mark.parametrize("sample", docx_corpus(), ids=lambda sample: sample.name)
def test_the_corpus_reads_as_a_reader_would(sample: Sample) -> None:
    (document,) = read_bytes(sample.name, sample.data, sample.media_type)
    if sample.refused_as is not None:
        assert isinstance(document, DocumentError)
        assert document.code == sample.refused_as
        return
    assert isinstance(document, SourceDocument), document
    assert recall(sample.expected, document.text) == 1.0
    assert precision(sample.expected, document.text) == 1.0
    assert parts_found(sample, document.text) == (len(sample.parts), True)
    assert document.text == sample.expected


def _with_body(*markup: str, setup: Any = None) -> bytes:
    import docx

    document = docx.Document()
    if setup is not None:
        setup(document)
    ooxml.append(document, *markup)
    return ooxml.saved(document)


def test_hidden_runs_are_dropped_and_a_run_unhidden_again_is_kept() -> None:
    unhidden = ('<w:r><w:rPr><w:vanish w:val="0"/></w:rPr><w:t xml:space="preserve"> shown'
                "</w:t></w:r>")
    data = _with_body(ooxml.paragraph(ooxml.run("Kept"), ooxml.run(" secret", hidden=True),
                                      unhidden))
    assert docx_text("h.docx", data) == "Kept shown"


def test_a_fields_code_never_shows_even_with_a_field_nested_in_it() -> None:
    # An IF field whose condition holds a nested field: only the outer result shows.
    nested = ('<w:r><w:fldChar w:fldCharType="begin"/></w:r>'
              '<w:r><w:instrText xml:space="preserve"> IF </w:instrText></w:r>'
              f'{ooxml.complex_field("DOCPROPERTY Status", "Final")}'
              '<w:r><w:instrText xml:space="preserve"> = "Final" "Approved" "" </w:instrText>'
              '</w:r><w:r><w:fldChar w:fldCharType="separate"/></w:r>'
              f'{ooxml.run("Approved")}<w:r><w:fldChar w:fldCharType="end"/></w:r>')
    data = _with_body(ooxml.paragraph(ooxml.run("Status: "), nested),
                      ooxml.paragraph(ooxml.run("Next paragraph.")))
    assert docx_text("f.docx", data) == "Status: Approved\nNext paragraph."


def test_tracked_deletions_and_moves_away_are_dropped() -> None:
    data = _with_body(ooxml.paragraph(ooxml.run("Pay in "), ooxml.deleted("sixty"),
                                      ooxml.inserted("thirty"), ooxml.run(" days")))
    assert docx_text("t.docx", data) == "Pay in thirty days"


def test_a_content_control_showing_its_prompt_is_dropped() -> None:
    data = _with_body(
        ooxml.paragraph(ooxml.run("Name: "), ooxml.content_control(
            ooxml.run("Click or tap here to enter text."), tag="name", placeholder=True)),
        ooxml.paragraph(ooxml.run("Date: "), ooxml.content_control(
            ooxml.run("4 December 2026"), tag="date")))
    assert docx_text("c.docx", data) == "Name:\nDate: 4 December 2026"


def test_a_text_box_is_read_once_not_again_from_its_fallback_copy() -> None:
    data = _with_body(ooxml.paragraph(ooxml.run("Anchor."), ooxml.text_box(
        ooxml.paragraph(ooxml.run("Boxed text.")))))
    text = docx_text("b.docx", data)
    assert text == "Anchor.\nBoxed text."
    assert text.count("Boxed") == 1


def test_a_merged_cell_is_read_once() -> None:
    import docx

    document = docx.Document()
    table = document.add_table(rows=3, cols=5)
    table.cell(0, 0).merge(table.cell(2, 4)).text = "Everything"
    assert docx_text("m.docx", ooxml.saved(document)) == "Everything"


def test_each_sections_header_comes_before_its_body_and_repeats_are_not_written() -> None:
    import docx
    from docx.enum.section import WD_SECTION

    document = docx.Document()
    document.sections[0].header.paragraphs[0].text = "Part one"
    document.add_paragraph("First body.")
    second = document.add_section(WD_SECTION.NEW_PAGE)
    second.header.is_linked_to_previous = False
    second.header.paragraphs[0].text = "Part two"
    document.add_paragraph("Second body.")
    third = document.add_section(WD_SECTION.NEW_PAGE)  # inherits "Part two"
    document.add_paragraph("Third body.")
    assert third.header.is_linked_to_previous
    assert docx_text("s.docx", ooxml.saved(document)) == (
        "Part one\nFirst body.\nPart two\nSecond body.\nThird body.")


def test_list_numbers_count_per_level_as_word_lays_them_out() -> None:
    import docx

    document = docx.Document()
    for text, style in (("Mix.", "List Number"), ("Bake.", "List Number"),
                        ("Serve.", "List Number"), ("Warm.", "List Bullet")):
        document.add_paragraph(text, style=style)
    assert docx_text("n.docx", ooxml.saved(document)) == (
        "1. Mix.\n2. Bake.\n3. Serve.\n- Warm.")


def test_the_main_part_is_found_by_its_relationship_wherever_it_is() -> None:
    data = make_docx(["Moved main part."])
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            content = source.read(info)
            name = info.filename
            if name == "word/document.xml":
                name = "word/main.xml"
            elif name == "word/_rels/document.xml.rels":
                name = "word/_rels/main.xml.rels"
            elif name in ("_rels/.rels", "[Content_Types].xml"):
                content = content.replace(b"word/document.xml", b"word/main.xml")
            target.writestr(name, content)
    assert docx_text("moved.docx", out.getvalue()) == "Moved main part."


def _replace_part(data: bytes, name: str, content: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            target.writestr(info, content if info.filename == name else source.read(info))
    return out.getvalue()


def test_a_damaged_part_is_corrupt_file_naming_the_part() -> None:
    data = _replace_part(make_docx(["x"]), "word/document.xml", b"<w:document><w:body>")
    with pytest.raises(DocumentError) as raised:
        docx_text("damaged.docx", data)
    assert raised.value.code == "corrupt_file"
    assert "word/document.xml is damaged" in str(raised.value)


def test_an_external_entity_is_never_resolved(tmp_path: Any) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    w = ooxml.W
    document = (f'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file://{secret}">]>'
                f'<w:document xmlns:w="{w}"><w:body><w:p><w:r><w:t>Hello &x;</w:t></w:r>'
                "</w:p></w:body></w:document>").encode()
    data = _replace_part(make_docx(["x"]), "word/document.xml", document)
    assert "TOPSECRET" not in docx_text("xxe.docx", data)


_WORDS = st.text(st.characters(codec="utf-8", categories=("L", "N")), min_size=1,
                 max_size=12)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(_WORDS, max_size=8).map(" ".join), min_size=1, max_size=6))
def test_plain_paragraphs_come_out_as_written(paragraphs: list[str]) -> None:
    expected = "\n".join(line for line in (normalise(p) for p in paragraphs) if line)
    (document,) = read_bytes("p.docx", make_docx(paragraphs), DOCX)
    if expected:
        assert isinstance(document, SourceDocument)
        assert document.text == expected
    else:
        assert isinstance(document, DocumentError) and document.code == "no_text"
