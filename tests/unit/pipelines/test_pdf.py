"""A PDF's text: encrypted files that need no password, form values, pypdf's warnings."""

from __future__ import annotations

import io
import logging
from dataclasses import replace

import pytest
from pypdf import PdfReader

from pipelines import DocumentError, Pipeline
from pipelines.documents import Reading, SourceDocument, read_bytes
from pipelines.media import attachment_tokens, render_pages
from tests.support.extraction import Sample, pdf_corpus, precision, recall
from tests.support.files import (
    make_blank_pdf,
    make_damaged_pdf,
    make_encrypted_pdf,
    make_mixed_pdf,
    make_pdf,
    make_pdf_form,
    make_scanned_pdf,
)


def read(data: bytes, name: str = "file.pdf") -> SourceDocument | DocumentError:
    (document,) = read_bytes(name, data, "application/pdf")
    return document


@pytest.mark.parametrize("algorithm", ["RC4-40", "RC4-128", "AES-128", "AES-256"])
def test_an_encrypted_pdf_with_an_empty_user_password_opens(algorithm: str) -> None:
    document = read(make_encrypted_pdf("Quarterly revenue rose.", "", algorithm=algorithm))
    assert isinstance(document, SourceDocument), document
    assert document.text == "Quarterly revenue rose."


@pytest.mark.parametrize("algorithm", ["RC4-128", "AES-256"])
def test_one_that_needs_a_password_has_its_own_code(algorithm: str) -> None:
    document = read(make_encrypted_pdf("secret", "pw", algorithm=algorithm))
    assert isinstance(document, DocumentError) and document.code == "encrypted_pdf"


def test_filled_form_values_follow_the_pages_text() -> None:
    document = read(make_pdf_form("Application form",
                                  {"Name": "Alice", "Referee": "Bob", "Agree": "/Yes",
                                   "Newsletter": "/Off", "Empty": ""}))
    assert isinstance(document, SourceDocument), document
    assert document.text == "Application form\n\nName: Alice\nReferee: Bob\nAgree: Yes"


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_pypdfs_warnings_name_the_file_once_each_and_never_reach_the_root_logger() -> None:
    # The root logger's handlers are what print "WARNING:pypdf._reader:..." bare (pytest's
    # caplog also listens on loggers that do not propagate, so it cannot tell).
    root, kept = logging.getLogger(), Kept()
    level = root.level
    root.addHandler(kept)
    root.setLevel(logging.WARNING)
    try:
        document = read(make_damaged_pdf("Still readable text"), name="inbox/scan-7.pdf")
    finally:
        root.removeHandler(kept)
        root.setLevel(level)
    assert isinstance(document, SourceDocument) and document.text == "Still readable text"
    ours = [r.getMessage() for r in kept.records if r.name == "docpipe.documents"]
    assert "inbox/scan-7.pdf: pypdf warns: incorrect startxref pointer(1)" in ours
    assert len(ours) == len(set(ours))
    assert not [r for r in kept.records if r.name.startswith("pypdf")]


def test_a_pdf_read_meanwhile_elsewhere_gets_none_of_its_warnings(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    read(make_damaged_pdf("damaged"), name="damaged.pdf")
    read(make_pdf("clean"), name="clean.pdf")
    assert not [r for r in caplog.records if "clean.pdf" in r.getMessage()]


def test_text_that_is_only_separators_is_no_text() -> None:
    document = read(make_pdf("|\n|\n---\n* * *"))
    assert isinstance(document, DocumentError) and document.code == "no_text"
    assert "only separators" in document.message


@pytest.mark.parametrize("sample", pdf_corpus(), ids=lambda sample: sample.name)
def test_the_corpus_reads_as_a_reader_would(sample: Sample) -> None:
    document = read(sample.data, name=sample.name)
    if sample.refused_as is not None:
        assert isinstance(document, DocumentError) and document.code == sample.refused_as
        return
    assert isinstance(document, SourceDocument), document
    assert recall(sample.expected, document.text) == 1.0
    assert precision(sample.expected, document.text) == 1.0
    assert scanned_pages(document) == sample.scanned_pages


def scanned_pages(document: SourceDocument) -> tuple[int, ...]:
    """The pages (from 1) a document with text sends as a scan, by its attachment's name."""
    if not document.attachments:
        return ()
    (attachment,) = document.attachments
    listed = attachment.filename.rsplit("(pages ", 1)[1].removesuffix(").pdf")
    return tuple(int(number) for number in listed.split(", "))


def test_pages_that_are_pictures_are_sent_as_a_scan_beside_the_text() -> None:
    data = make_mixed_pdf([("Quarterly revenue rose.", False), ("Background", True),
                           ("Board minutes follow.", False), ("", True)])
    document = read(data, name="inbox/deck.pdf")
    assert isinstance(document, SourceDocument), document
    assert document.text == "Quarterly revenue rose.\n\nBackground\n\nBoard minutes follow."
    (attachment,) = document.attachments
    assert attachment.filename == "deck (pages 2, 4).pdf"
    assert attachment.pages == 2
    pages = PdfReader(io.BytesIO(attachment.data)).pages
    assert len(pages) == 2 and "Background" in (pages[0].extract_text() or "")
    # Each page image is estimated, and rendered when the pipeline sends images.
    assert attachment_tokens(attachment) == 2 * attachment_tokens(
        replace(attachment, pages=1))
    assert len(render_pages(attachment)) == 2


def test_the_rule_is_the_pipelines_to_set() -> None:
    data = make_mixed_pdf([("Quarterly revenue rose.", False), ("A caption of 35 characters "
                                                                "here", True)])
    (never,) = read_bytes("d.pdf", data, "application/pdf",
                          reading=Reading(scanned_page_chars=0))
    (wider,) = read_bytes("d.pdf", data, "application/pdf",
                          reading=Reading(scanned_page_chars=40))
    (narrower,) = read_bytes("d.pdf", data, "application/pdf",
                             reading=Reading(scanned_page_chars=20))
    assert isinstance(never, SourceDocument) and never.attachments == ()
    assert isinstance(wider, SourceDocument) and len(wider.attachments) == 1
    assert isinstance(narrower, SourceDocument) and narrower.attachments == ()


def test_a_pipeline_that_refuses_scans_sends_a_text_pdfs_pages_as_text_alone() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"],
              "additionalProperties": False}
    refusing = Pipeline(name="p", model="m", instructions="i", output_schema=schema,
                        scanned_pdf="refuse", scanned_page_chars=500)
    assert refusing.reading.scanned_page_chars == 0
    assert Pipeline(name="p", model="m", instructions="i", output_schema=schema,
                    scanned_page_chars=500).reading.scanned_page_chars == 500
    default = Pipeline(name="p", model="m", instructions="i", output_schema=schema)
    assert default.version != replace(default, scanned_page_chars=0).version


@pytest.mark.parametrize("password", [None, ""])
def test_blank_pages_are_no_text_not_a_scan(password: str | None) -> None:
    document = read(make_blank_pdf(2, password=password))
    assert isinstance(document, DocumentError) and document.code == "no_text"
    assert "blank" in document.message


def test_an_encrypted_scan_is_sent_decrypted() -> None:
    from pypdf import PdfWriter

    writer = PdfWriter(clone_from=io.BytesIO(make_scanned_pdf(2)))
    writer.encrypt("", "owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    document = read(out.getvalue())
    assert isinstance(document, SourceDocument) and document.text == ""
    (attachment,) = document.attachments
    assert attachment.pages == 2
    assert not PdfReader(io.BytesIO(attachment.data)).is_encrypted
