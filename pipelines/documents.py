"""Turning files into document text: discovery, reading, normalisation and hashing.

Every source ends either as a :class:`SourceDocument` or as a :class:`DocumentError` that
names the file and the reason; one bad file never stops the others.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import stat
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pipelines.docx import docx_text
from pipelines.errors import DocumentError
from pipelines.html import html_text
from pipelines.media import IMAGE_TYPES, Attachment, prepare_image
from pipelines.pdf import pdf_text

MEDIA_TYPES: dict[str, str] = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
} | IMAGE_TYPES

#: Default cap on a single file's size.
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
#: Share of control characters above which decoded "text" is really binary.
_BINARY_RATIO = 0.05
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
#: Runs of horizontal space that are not already one plain space: replacing every single
#: space between words by itself took most of normalise's time.
_SPACES = re.compile(r"(?: [ \t\f\v\u00a0]|[\t\f\v\u00a0])[ \t\f\v\u00a0]*")
_BLANK_LINES = re.compile(r"\n{3,}")
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class SourceDocument:
    """One document's normalised text and media, ready to be stored and processed.

    An image, or a PDF with no text layer, has no text and one attachment; a PDF with text
    whose pages include scanned ones (an image and little text) has both.
    """

    source: str
    media_type: str
    size_bytes: int
    text: str
    attachments: tuple[Attachment, ...] = ()

    @property
    def content_hash(self) -> str:
        """SHA-256 of the normalised text and media: the identity for dedup and results."""
        return content_hash(self.text, self.attachments)


def content_hash(text: str, attachments: tuple[Attachment, ...] = ()) -> str:
    """SHA-256 hex digest of ``text`` encoded as UTF-8, and of any attachments' bytes."""
    digest = hashlib.sha256(text.encode("utf-8"))
    for attachment in attachments:
        digest.update(f"\0{attachment.media_type}\0{attachment.digest}".encode())
    return digest.hexdigest()


def normalise(text: str) -> str:
    """Normalise text so the same content hashes the same wherever it came from.

    NFC, Unix newlines, no NUL or other control characters (PostgreSQL rejects NUL in
    text), single spaces, at most one blank line in a row, no trailing whitespace.
    """
    # Ingest runs this on every document, and Python's re takes about 50 us to scan 6 KB
    # even when nothing matches: each step runs only when a fast test says it has work.
    text = unicodedata.normalize("NFC", text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if _has_controls(text):
        text = _CONTROL.sub("", text)
    # _SPACES never matches a newline, so one pass over the text collapses the same runs as a
    # pass per line. (\f and \v are control characters, gone by now.)
    if "  " in text or "\t" in text or "\u00a0" in text:
        text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    if "\n\n\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


_CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])


def _has_controls(text: str) -> bool:
    """Whether ``text`` has a character that :data:`_CONTROL` removes."""
    if text.isascii():  # bytes.translate runs at memory speed; re scans a character at a time
        data = text.encode("ascii")
        return len(data.translate(None, _CONTROL_BYTES)) != len(data)
    return _CONTROL.search(text) is not None


def discover(inputs: Iterable[str]) -> Iterator[Path | DocumentError]:
    """Expand files, folders (recursively, in sorted order) and glob patterns into files.

    Missing paths and unreadable folders come back as :class:`DocumentError`. Symlinked
    folders are not followed, so a symlink loop cannot trap the walk.
    """
    # A path reached twice (a file inside a folder also given, overlapping globs) is yielded
    # once. Only the inputs are remembered, never the files a walk finds, so memory does not
    # grow with the folder: a walk skips the explicit files already yielded, and any input
    # inside a folder already walked is skipped whole.
    roots: list[Path] = []
    files: set[Path] = set()
    for raw in inputs:
        if _GLOB_CHARS.search(raw) and not os.path.exists(raw):
            matches = sorted(glob.glob(raw, recursive=True))
            if not matches:
                yield DocumentError(raw, "the pattern matches no file", code="not_found")
            candidates: Iterable[str] = matches
        else:
            candidates = [raw]
        for candidate in candidates:
            path = Path(candidate)
            if not (path.exists() or path.is_symlink()):
                yield DocumentError(candidate, "no such file or folder", code="not_found")
            elif any(path.is_relative_to(root) for root in roots):
                continue
            elif path.is_dir():
                yield from _walk(path, skip=files, walked=list(roots))
                roots.append(path)
            elif path not in files:
                files.add(path)
                yield path


def unmatched(inputs: Iterable[str]) -> list[str]:
    """The inputs that name no file: a missing path, a pattern that matches nothing, or a
    folder with no file under it (a run over them would have nothing to read).

    Stops at the first file a folder holds, so a large folder costs one directory read.
    """
    missing = []
    for raw in inputs:
        if _GLOB_CHARS.search(raw) and not os.path.exists(raw):
            found = any(_has_file(Path(match)) for match in glob.iglob(raw, recursive=True))
        else:
            found = _has_file(Path(raw))
        if not found:
            missing.append(raw)
    return missing


def _has_file(path: Path) -> bool:
    if path.is_symlink() or path.is_file():
        return True
    if not path.is_dir():
        return False
    return any(names for _folder, _dirs, names in os.walk(path, followlinks=False))


def _walk(root: Path, *, skip: set[Path], walked: list[Path]) -> Iterator[Path | DocumentError]:
    """Files under ``root`` in sorted order, but those in ``skip`` or under ``walked``."""
    errors: list[OSError] = []
    for folder, dirs, names in os.walk(root, onerror=errors.append, followlinks=False):
        dirs.sort()
        if walked:  # an earlier input inside this one was walked already
            dirs[:] = [d for d in dirs if Path(folder, d) not in walked]
        for name in sorted(names):
            path = Path(folder) / name
            if path not in skip:
                yield path
    for error in errors:
        yield DocumentError(str(error.filename), f"cannot list folder: {error.strerror}",
                            code="unreadable")


@dataclass(frozen=True)
class Reading:
    """What a pipeline asks of the readers (:attr:`pipelines.definitions.Pipeline.reading`).

    Attributes:
        html_whole_page: Keep an HTML page's menus and page furniture
            (:func:`pipelines.html.html_text`).
        scanned_page_chars: A PDF page with an image and fewer characters of text than this
            is sent as a scan too, besides the document's text (0: only a PDF with no text
            at all is a scan).
    """

    html_whole_page: bool = False
    scanned_page_chars: int = 100


#: What a pipeline asks by default.
DEFAULT_READING = Reading()


def read_source(
    path: Path, *, text_field: str = "text", max_bytes: int = DEFAULT_MAX_BYTES,
    reading: Reading = DEFAULT_READING,
) -> Iterator[SourceDocument | DocumentError]:
    """Read one file into documents: one for most files, one per record for JSON/JSONL,
    as ``reading`` asks."""
    source = str(path)
    media_type = MEDIA_TYPES.get(path.suffix.lower())
    try:
        status = path.stat()
    except OSError as exc:
        yield DocumentError(source, f"cannot read: {exc.strerror}", code="unreadable")
        return
    if not stat.S_ISREG(status.st_mode):
        # Reading a FIFO or a device would block or never end.
        yield DocumentError(source, "not a regular file (a pipe, socket or device)",
                            code="unreadable")
        return
    size = status.st_size
    if media_type is None:
        yield DocumentError(
            source,
            f"unsupported file type {path.suffix or '(none)'!r}; supported: "
            + ", ".join(sorted(MEDIA_TYPES)),
            code="unsupported_type",
        )
        return
    if size == 0:
        yield DocumentError(source, "the file is empty (0 bytes)", code="empty_file")
        return
    if size > max_bytes:
        yield DocumentError(
            source, f"the file is {size} bytes, above the limit of {max_bytes}", code="too_large"
        )
        return
    try:
        data = path.read_bytes()
    except OSError as exc:
        yield DocumentError(source, f"cannot read: {exc.strerror}", code="unreadable")
        return
    yield from read_bytes(source, data, media_type, text_field=text_field, reading=reading)


def read_bytes(
    source: str, data: bytes, media_type: str, *, text_field: str = "text",
    reading: Reading = DEFAULT_READING,
) -> Iterator[SourceDocument | DocumentError]:
    """Parse ``data`` of ``media_type``; see :func:`read_source`."""
    if media_type in ("application/json", "application/x-ndjson"):
        yield from _read_records(source, data, media_type, text_field)
        return
    try:
        if media_type in IMAGE_TYPES.values():
            image = prepare_image(source, data, media_type)
            yield SourceDocument(source, media_type, len(data), "", (image,))
            return
        attachments: tuple[Attachment, ...] = ()
        if media_type == "application/pdf":
            raw, attachments = pdf_text(source, data,
                                        scanned_page_chars=reading.scanned_page_chars)
            if not raw:  # a scan: its pages are the document
                yield SourceDocument(source, media_type, len(data), "", attachments)
                return
        elif media_type.endswith("wordprocessingml.document"):
            raw = docx_text(source, data)
        elif media_type == "text/html":
            raw = html_text(decode_text(source, data), whole_page=reading.html_whole_page)
        else:
            raw = decode_text(source, data)
    except DocumentError as exc:
        yield exc
        return
    yield _document(source, media_type, len(data), raw, attachments)


def _document(source: str, media_type: str, size: int, raw: str,
              attachments: tuple[Attachment, ...] = ()) -> SourceDocument | DocumentError:
    text = normalise(raw)
    if not text:
        return DocumentError(source, "no text left after extraction", code="no_text")
    if not any(character.isalnum() for character in text):
        # What is left of a layout with no words: table rules, bullets, separators.
        return DocumentError(source, "only separators and punctuation left after extraction",
                             code="no_text")
    return SourceDocument(source=source, media_type=media_type, size_bytes=size, text=text,
                          attachments=attachments)


def decode_text(source: str, data: bytes) -> str:
    """Decode bytes of unknown encoding; BOMs first, then UTF-8, then detection.

    Raises:
        DocumentError: ``binary_content`` when the bytes are not text in any encoding.
    """
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"),
                       (b"\xfe\xff", "utf-16")):
        if data.startswith(bom):
            return data.decode(codec, errors="replace")
    if (utf16 := _bomless_utf16(data)) is not None:
        return data.decode(utf16, errors="replace")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = _detect(source, data)
    # Stray NULs are stripped later; other control characters mean binary content.
    controls = text.count("\ufffd")
    if _has_controls(text):  # rare, and re takes 50 us to scan 6 kB even to find nothing
        controls += len(_CONTROL.findall(text)) - text.count("\x00")
    if text and controls / len(text) > _BINARY_RATIO:
        raise DocumentError(source, "the content is binary, not text", code="binary_content")
    return text


#: Among equally plausible single-byte encodings, the most common one for Western text.
_PREFERRED = ("cp1252", "utf_8", "latin_1")


def _detect(source: str, data: bytes) -> str:
    from charset_normalizer import from_bytes

    matches = from_bytes(data)
    best = matches.best()
    if best is None:
        raise DocumentError(source, "the content is binary, not text", code="binary_content")
    tied = {m.encoding: m for m in matches
            if m.chaos == best.chaos and m.coherence == best.coherence}
    chosen = next((tied[name] for name in _PREFERRED if name in tied), best)
    return str(chosen)


def _bomless_utf16(data: bytes) -> str | None:
    """``utf-16-le``/``-be`` when NULs sit on every other byte, as in ASCII-range UTF-16."""
    sample = data[:4096]
    half = len(sample) // 2
    if half < 8 or b"\x00" not in sample:
        return None
    odd = sample[1::2].count(0)
    even = sample[0::2].count(0)
    if odd >= 0.4 * half and even <= 0.05 * half:
        return "utf-16-le"
    if even >= 0.4 * half and odd <= 0.05 * half:
        return "utf-16-be"
    return None


def _read_records(
    source: str, data: bytes, media_type: str, text_field: str
) -> Iterator[SourceDocument | DocumentError]:
    try:
        text = decode_text(source, data)
    except DocumentError as exc:
        yield exc
        return
    if media_type == "application/json":
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            yield DocumentError(source, f"invalid JSON: {exc}", code="corrupt_file")
            return
        records = loaded if isinstance(loaded, list) else [loaded]
        numbered: Iterable[tuple[int, object]] = enumerate(records, start=1)
        for index, record in numbered:
            yield _record(f"{source}#{index}", record, text_field, media_type)
        return
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{source}#L{line_no}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield DocumentError(where, f"invalid JSON line: {exc.msg}", code="bad_record")
            continue
        yield _record(where, record, text_field, media_type)


def _record(where: str, record: object, text_field: str, media_type: str
            ) -> SourceDocument | DocumentError:
    if not isinstance(record, dict):
        return DocumentError(where, "the record is not a JSON object", code="bad_record")
    value = record.get(text_field)
    if not isinstance(value, str):
        return DocumentError(
            where, f"the record has no string field {text_field!r}", code="bad_record"
        )
    size = len(value.encode("utf-8"))
    return _document(where, media_type, size, value)
