"""Builders for test documents in binary formats (PDF with a text layer, DOCX)."""

from __future__ import annotations

import io
import zipfile
import zlib


def make_pdf(text: str, *, pages: int = 1) -> bytes:
    """A minimal valid PDF whose pages carry ``text`` as a real text layer (Helvetica)."""

    def esc(line: str) -> str:
        return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    lines = text.splitlines() or [""]
    objects: list[bytes] = []
    page_ids = [3 + 2 * i for i in range(pages)]
    font_id = 3 + 2 * pages
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{pid} 0 R" for pid in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode())
    for pid in page_ids:
        ops = ["BT", "/F1 11 Tf", "14 TL", "50 780 Td"]
        for line in lines:
            ops.append(f"({esc(line)}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1", errors="replace")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents {pid + 1} 0 R "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    return _pdf_file(objects)


def _pdf_file(objects: list[bytes]) -> bytes:
    """A PDF of numbered ``objects`` (object 1 is the catalog), with its xref table."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
              .encode())
    return out.getvalue()


def make_pdf_bomb(inflated_mb: int) -> bytes:
    """A one-page PDF whose content stream inflates to ``inflated_mb`` MiB of zeros.

    Built without compressing gigabytes: after a full flush a deflate stream's state is
    reset, so the block for one MiB of zeros can be repeated as often as needed.
    """
    chunk = b"\0" * (1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    checksum = 1
    for _ in range(inflated_mb):
        checksum = zlib.adler32(chunk, checksum)
    stream = b"\x78\xda" + block * inflated_mb + deflate.flush() + checksum.to_bytes(4, "big")
    return _pdf_file([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream
        + b"\nendstream",
    ])


def make_encrypted_pdf(text: str, password: str = "secret", *,
                       algorithm: str = "RC4-128") -> bytes:
    """A PDF encrypted with ``algorithm`` (``RC4-40``, ``RC4-128``, ``AES-128``, ``AES-256``,
    as pypdf names them); with an empty ``password`` it opens without one, as permissions-only
    files do."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(make_pdf(text))).pages:
        writer.add_page(page)
    writer.encrypt(user_password=password, owner_password=password + "-owner",
                   algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_pdf_form(text: str, fields: dict[str, str]) -> bytes:
    """A one-page PDF with ``text`` and an AcroForm of filled fields: a text field for each
    value, a ticked checkbox for ``/Yes``, an unticked one for ``/Off``."""
    count = len(fields)
    field_ids = [5 + i for i in range(count)]
    font_id = 5 + count
    refs = " ".join(f"{i} 0 R" for i in field_ids)
    stream = f"BT /F1 11 Tf 50 780 Td ({text}) Tj ET".encode("latin-1")
    objects = [
        f"<< /Type /Catalog /Pages 2 0 R /AcroForm << /Fields [{refs}] >> >>".encode(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R /Annots "
        f"[{refs}] /Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode(),
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    for n, (name, value) in enumerate(fields.items()):
        box = f"/Rect [50 {700 - 30 * n} 250 {720 - 30 * n}] /P 3 0 R"
        if value.startswith("/"):
            objects.append(f"<< /Type /Annot /Subtype /Widget /FT /Btn /T ({name}) /V {value} "
                           f"/AS {value} {box} >>".encode())
        else:
            objects.append(f"<< /Type /Annot /Subtype /Widget /FT /Tx /T ({name}) /V ({value}) "
                           f"{box} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    return _pdf_file(objects)


def make_damaged_pdf(text: str) -> bytes:
    """A PDF whose ``startxref`` points to the wrong place: readers rebuild the table, and
    pypdf warns about it."""
    data = make_pdf(text)
    head, _, tail = data.rpartition(b"startxref\n")
    return head + b"startxref\n" + b"12" + tail[tail.index(b"\n"):]


def make_docx(paragraphs: list[str]) -> bytes:
    """A DOCX with one paragraph per entry."""
    import docx

    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make_encrypted_docx(paragraphs: list[str], password: str = "secret") -> bytes:
    """A DOCX encrypted with a password as Office does it (agile encryption in an OLE
    compound file), by msoffcrypto-tool."""
    from msoffcrypto.format.ooxml import OOXMLFile

    out = io.BytesIO()
    OOXMLFile(io.BytesIO(make_docx(paragraphs))).encrypt(password, out)
    return out.getvalue()


def make_zip_bomb_docx(inflated_bytes: int) -> bytes:
    """A DOCX-named zip whose one part inflates to ``inflated_bytes`` of zeros."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("word/document.xml", "w") as member:
            chunk = b"\0" * (1024 * 1024)
            for _ in range(inflated_bytes // len(chunk)):
                member.write(chunk)
    return out.getvalue()


def make_image(width: int, height: int, fmt: str = "PNG", *, text: str = "docpipe",
               frames: int = 1) -> bytes:
    """An image of ``width`` x ``height`` with ``text`` drawn on it, in ``fmt``."""
    from PIL import Image, ImageDraw

    images = []
    for n in range(frames):
        image = Image.new("RGB", (width, height), (255, 255 - 40 * n % 255, 255))
        ImageDraw.Draw(image).text((10, 10), f"{text} {n}", fill="black")
        images.append(image)
    out = io.BytesIO()
    if frames > 1:
        images[0].save(out, fmt, save_all=True, append_images=images[1:], duration=100)
    else:
        images[0].save(out, fmt)
    return out.getvalue()


def make_scanned_pdf(pages: int, *, text: str = "Scanned page") -> bytes:
    """A PDF whose pages are only images (a scan): no text layer at all."""
    from PIL import Image, ImageDraw

    images = []
    for n in range(pages):
        page = Image.new("L", (850, 1100), 255)
        ImageDraw.Draw(page).text((60, 60), f"{text} {n + 1}", fill=0)
        images.append(page)
    out = io.BytesIO()
    images[0].save(out, "PDF", resolution=100, save_all=True, append_images=images[1:])
    return out.getvalue()


def make_mixed_pdf(pages: list[tuple[str, bool]]) -> bytes:
    """A PDF of text pages and picture pages, as a report with full-page figures or a deck
    of slides is: ``(text, False)`` is a page of text; ``(text, True)`` a page that is an
    image, with ``text`` (a word, a caption, or nothing) as its only text layer."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for text, picture in pages:
        (text_page,) = PdfReader(io.BytesIO(make_pdf(text))).pages
        if picture:
            (picture_page,) = PdfReader(io.BytesIO(make_scanned_pdf(1, text="Figure"))).pages
            page = writer.add_page(picture_page)
            if text:
                page.merge_page(text_page)
        else:
            writer.add_page(text_page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_blank_pdf(pages: int, *, password: str | None = None) -> bytes:
    """A PDF of empty pages (nothing drawn), encrypted with ``password`` if given (``""``:
    a permissions-only file)."""
    from pypdf import PdfWriter

    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(595, 842)
    if password is not None:
        writer.encrypt(password, "owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_png_bomb(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, made without allocating them.

    Its pixel data is the deflate of all-zero rows, built from one compressed row-block
    repeated (like :func:`make_pdf_bomb`), so gigapixels cost the test kilobytes.
    """
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    row = b"\0" * (1 + width)  # filter byte + one grey byte a pixel
    deflate = zlib.compressobj(9, zlib.DEFLATED, 15)
    body = deflate.compress(row * 64) + deflate.flush(zlib.Z_FULL_FLUSH)
    idat = body * 4 + deflate.flush()  # a stream that ends early: decoding it fails late
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))
