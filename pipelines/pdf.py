"""A PDF's text: its text layer page by page, then its filled form values.

Encrypted files open when their user password is empty (RC4 and AES alike: pypdf's crypto
extra brings ``cryptography``); a file that needs a password is ``encrypted_pdf``. A file
with no text layer at all (a scan) is kept whole as an attachment. pypdf's warnings about a
damaged file ("incorrect startxref pointer") are logged once each, naming the file, instead
of reaching stderr bare through the root logger.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from pipelines.errors import DocumentError
from pipelines.media import Attachment, scanned_pdf

log = logging.getLogger("docpipe.documents")

#: A PDF stream that inflates past this is treated as a decompression bomb. Real pages'
#: content streams are kilobytes to a few megabytes; scans keep their pixels in images,
#: which text extraction never inflates.
MAX_PDF_STREAM_BYTES = 32 * 1024 * 1024
#: Extracted text longer than this (about 12M tokens) is refused rather than held in memory.
MAX_EXTRACTED_CHARS = 50_000_000

#: The warnings pypdf logs while the current thread reads a file.
_warnings: ContextVar[Counter[str] | None] = ContextVar("docpipe_pdf_warnings", default=None)


def pdf_text(source: str, data: bytes) -> str | Attachment:
    """The PDF's text; or, when it has no text layer (a scan), the PDF as an attachment.

    Raises:
        DocumentError: ``encrypted_pdf``, ``decompression_bomb``, ``too_large``,
            ``corrupt_file``, or ``no_text`` for a PDF without pages.
    """
    with _library_warnings(source):
        pages, fields, first_page = _read(source, data)
    text = "\n\n".join(pages)
    if fields:
        text = f"{text}\n\n" + "\n".join(f"{name}: {value}" for name, value in fields)
    if not text.strip():
        if not pages:
            raise DocumentError(source, "the PDF has no pages", code="no_text")
        return scanned_pdf(source, data, len(pages), first_page)
    return text


def _read(source: str, data: bytes
          ) -> tuple[list[str], list[tuple[str, str]], tuple[float, float]]:
    """The text of each page, the filled form fields, and the first page's size."""
    from pypdf import PdfReader, apply_configuration
    from pypdf.errors import DependencyError, LimitReachedError, PdfReadError

    limit = MAX_PDF_STREAM_BYTES
    try:
        with apply_configuration(zlib_maximum_output_length=limit,
                                 lzw_maximum_output_length=limit,
                                 run_length_maximum_output_length=limit):
            reader = PdfReader(io.BytesIO(data))
            if reader.is_encrypted and not reader.decrypt(""):
                raise DocumentError(source, "the PDF is encrypted with a password",
                                    code="encrypted_pdf")
            pages: list[str] = []
            length = 0
            for number, page in enumerate(reader.pages, start=1):
                # Inflate the page's content first: pypdf's text extraction would swallow
                # a bomb's LimitReachedError and report an empty page.
                try:
                    page.get_contents()
                except LimitReachedError as exc:
                    raise DocumentError(
                        source, f"page {number} has a stream that inflates past {limit} bytes "
                        "(a decompression bomb?)", code="decompression_bomb") from exc
                text = page.extract_text() or ""
                length += len(text)
                if length > MAX_EXTRACTED_CHARS:
                    raise DocumentError(
                        source, f"the PDF's text passes {MAX_EXTRACTED_CHARS} characters by "
                        f"page {number}", code="too_large")
                pages.append(text)
            fields = _filled_fields(reader.get_fields() or {})
            first = reader.pages[0].mediabox if pages else None
    except DocumentError:
        raise
    except LimitReachedError as exc:
        raise DocumentError(source, f"the PDF passes a safety limit: {exc}",
                            code="decompression_bomb") from exc
    except DependencyError as exc:  # an encryption this install cannot undo
        raise DocumentError(source, f"the PDF's encryption cannot be opened here: {exc}",
                            code="encrypted_pdf") from exc
    except PdfReadError as exc:
        if "decrypt" in str(exc).lower() or "password" in str(exc).lower():
            raise DocumentError(source, "the PDF is encrypted with a password",
                                code="encrypted_pdf") from exc
        raise DocumentError(source, f"not a readable PDF: {exc}", code="corrupt_file") from exc
    except Exception as exc:  # pypdf documents that broken files raise arbitrary exceptions
        raise DocumentError(source, f"not a readable PDF: {exc.__class__.__name__}: {exc}",
                            code="corrupt_file") from exc
    size = (float(first.width), float(first.height)) if first is not None else (0.0, 0.0)
    return pages, fields, size


def _filled_fields(fields: dict[str, Any]) -> list[tuple[str, str]]:
    """The form fields that hold a value, as (name, value): text typed in, a box ticked, a
    choice made. A page's text extraction never sees them: they live in the form's widgets."""
    filled = []
    for name, field in fields.items():
        value = field.get("/V") if hasattr(field, "get") else None
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        text = str(value).strip() if value is not None else ""
        if text in ("", "/Off", "Off"):
            continue
        filled.append((str(field.get("/TU") or name), text.removeprefix("/")))
    return filled


@contextmanager
def _library_warnings(source: str) -> Iterator[None]:
    """Collect what pypdf warns while this thread reads ``source``; log each message once,
    with the file's path and how often it came."""
    _route_pypdf()
    seen: Counter[str] = Counter()
    token = _warnings.set(seen)
    try:
        yield
    finally:
        _warnings.reset(token)
        for message, times in seen.items():
            log.warning("%s: pypdf warns: %s%s", source, message,
                        f" ({times} times)" if times > 1 else "")


class _ToTheFile(logging.Handler):
    """pypdf's records, counted against the file the emitting thread reads."""

    def emit(self, record: logging.LogRecord) -> None:
        seen = _warnings.get()
        if seen is None:  # pypdf used outside docpipe's reading: say it as it is
            log.warning("pypdf: %s", record.getMessage())
            return
        seen[record.getMessage()] += 1


def _route_pypdf() -> None:
    """pypdf's records go to :class:`_ToTheFile`, not up to the root logger (set at each
    read: a logging configuration made since may have reset it)."""
    logger = logging.getLogger("pypdf")
    if not any(isinstance(h, _ToTheFile) for h in logger.handlers):
        logger.addHandler(_ToTheFile(logging.WARNING))
    logger.propagate = False
