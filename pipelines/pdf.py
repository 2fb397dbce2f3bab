"""A PDF's text: its text layer page by page, then its filled form values; and the pages
that are pictures, to send as a scan.

Encrypted files open when their user password is empty (RC4 and AES alike: pypdf's crypto
extra brings ``cryptography``); a file that needs a password is ``encrypted_pdf``. A file
with no text layer at all (a scan) is kept whole as an attachment, and so are, beside the
text, the pages of a PDF with text that carry an image and little text. pypdf's warnings
about a damaged file ("incorrect startxref pointer") are logged once each, naming the file,
instead of reaching stderr bare through the root logger.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
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


@dataclass
class _Read:
    """What a PDF holds: each page's text, the pages to send as images, its form values."""

    pages: list[str]
    fields: list[tuple[str, str]]
    #: Each page's size in points.
    sizes: list[tuple[float, float]]
    #: Pages with an image and little text (numbered from 0).
    scanned: list[int]
    #: Pages with nothing on them: no text, no image, an empty content stream.
    blank: int
    #: The file to send for ``scanned`` (or, when no page has text, for all pages):
    #: decrypted when the file was encrypted.
    scans: bytes


def pdf_text(source: str, data: bytes, *, scanned_page_chars: int = 100
             ) -> tuple[str, tuple[Attachment, ...]]:
    """The PDF's text, and the pages to send as a scan besides it.

    A PDF with no text at all is a scan: the text is empty, and the attachment is the
    whole file. A PDF with text sends too, as one attachment, its pages that have an image
    and fewer than ``scanned_page_chars`` characters of text (figures, slides, scanned
    pages); 0 never does.

    Raises:
        DocumentError: ``encrypted_pdf``, ``decompression_bomb``, ``too_large``,
            ``corrupt_file``, or ``no_text`` for a PDF without pages or with blank pages only.
    """
    with _library_warnings(source):
        read = _read(source, data, scanned_page_chars)
    text = "\n\n".join(read.pages)
    if read.fields:
        text = f"{text}\n\n" + "\n".join(f"{name}: {value}" for name, value in read.fields)
    if not text.strip():
        if not read.pages:
            raise DocumentError(source, "the PDF has no pages", code="no_text")
        if read.blank == len(read.pages):
            raise DocumentError(source, "the PDF's pages are blank", code="no_text")
        return "", (scanned_pdf(source, read.scans, len(read.pages), read.sizes[0]),)
    if not read.scanned:
        return text, ()
    numbers = ", ".join(str(number + 1) for number in read.scanned)
    # The attachment's name tells the model which pages it shows.
    name = f"{source.rsplit('.', 1)[0]} (pages {numbers}).pdf"
    return text, (scanned_pdf(name, read.scans, len(read.scanned), read.sizes[read.scanned[0]]),)


def _read(source: str, data: bytes, scanned_page_chars: int) -> _Read:
    """Read every page, under pypdf's limits on what a stream may inflate to."""
    from pypdf import PdfReader, apply_configuration
    from pypdf.errors import DependencyError, LimitReachedError, PdfReadError

    limit = MAX_PDF_STREAM_BYTES
    try:
        with apply_configuration(zlib_maximum_output_length=limit,
                                 lzw_maximum_output_length=limit,
                                 run_length_maximum_output_length=limit):
            reader = PdfReader(io.BytesIO(data))
            encrypted = reader.is_encrypted
            if encrypted and not reader.decrypt(""):
                raise DocumentError(source, "the PDF is encrypted with a password",
                                    code="encrypted_pdf")
            read = _pages(source, reader, scanned_page_chars)
            read.fields = _filled_fields(reader.get_fields() or {})
            has_text = any(page.strip() for page in read.pages) or bool(read.fields)
            if read.scanned and has_text:
                read.scans = _subset(reader, read.scanned)
            elif not has_text:  # a scan: sent whole, and readable without the file's key
                read.scans = _subset(reader, range(len(read.pages))) if encrypted else data
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
    return read


def _pages(source: str, reader: Any, scanned_page_chars: int) -> _Read:
    from pypdf.errors import LimitReachedError

    read = _Read(pages=[], fields=[], sizes=[], scanned=[], blank=0, scans=b"")
    length = 0
    for index, page in enumerate(reader.pages):
        number = index + 1
        # Inflate the page's content first: pypdf's text extraction would swallow a bomb's
        # LimitReachedError and report an empty page.
        try:
            contents = page.get_contents()
        except LimitReachedError as exc:
            raise DocumentError(
                source, f"page {number} has a stream that inflates past "
                f"{MAX_PDF_STREAM_BYTES} bytes (a decompression bomb?)",
                code="decompression_bomb") from exc
        text = page.extract_text() or ""
        length += len(text)
        if length > MAX_EXTRACTED_CHARS:
            raise DocumentError(source, f"the PDF's text passes {MAX_EXTRACTED_CHARS} "
                                f"characters by page {number}", code="too_large")
        read.pages.append(text)
        box = page.mediabox
        read.sizes.append((float(box.width), float(box.height)))
        images = _has_image(page.get("/Resources"))
        if images and len(text.strip()) < scanned_page_chars:
            read.scanned.append(index)
        if not images and not text.strip() and (
                contents is None or not contents.get_data().strip()):
            read.blank += 1
    return read


def _has_image(resources: Any, depth: int = 0) -> bool:
    """Whether a page's resources draw an image, directly or inside a form it draws."""
    if resources is None or depth > 4:  # forms nest forms; a loop must end
        return False
    xobjects = resources.get_object().get("/XObject")
    if xobjects is None:
        return False
    for reference in xobjects.get_object().values():
        xobject = reference.get_object()
        subtype = xobject.get("/Subtype")
        if subtype == "/Image" or (subtype == "/Form" and _has_image(
                xobject.get("/Resources"), depth + 1)):
            return True
    return False


def _subset(reader: Any, indices: Iterable[int]) -> bytes:
    """A PDF of the ``indices`` pages of ``reader``, unencrypted."""
    from pypdf import PdfWriter

    writer = PdfWriter()
    for index in indices:
        writer.add_page(reader.pages[index])
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


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
