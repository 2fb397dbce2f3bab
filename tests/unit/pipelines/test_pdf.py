"""A PDF's text: encrypted files that need no password, form values, pypdf's warnings."""

from __future__ import annotations

import logging

import pytest

from pipelines import DocumentError
from pipelines.documents import SourceDocument, read_bytes
from tests.support.extraction import Sample, pdf_corpus, precision, recall
from tests.support.files import (
    make_damaged_pdf,
    make_encrypted_pdf,
    make_pdf,
    make_pdf_form,
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
