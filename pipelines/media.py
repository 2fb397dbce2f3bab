"""Images and scanned PDFs: preparing them for the model, and what they cost in tokens.

An image document is sent as an ``input_image`` part (a base64 data URL), scaled down first
when it is larger than the model would look at. A PDF without a text layer is sent whole as
an ``input_file`` part, or rendered to one image per page, as the pipeline says.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import re
import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from pipelines.errors import DocumentError

IMAGE_TYPES: dict[str, str] = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
}
_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP", "image/gif": "GIF"}

#: The model scales every image to fit 2,048 x 2,048 pixels: sending more costs bandwidth and
#: request size, never detail.
MAX_IMAGE_SIDE = 2048
#: Largest encoded image docpipe sends (the API refuses images above 20 MB).
MAX_IMAGE_BYTES = 20 * 1024 * 1024
#: Images with more pixels than this are refused before they are decoded (a decompression
#: bomb: a few kilobytes of PNG can claim gigabytes of pixels).
MAX_IMAGE_PIXELS = 100_000_000
#: A scanned PDF sent as ``input_file``: the API takes at most 100 pages and 32 MB.
MAX_PDF_PAGES = 100
MAX_PDF_BYTES = 32 * 1024 * 1024
#: Pages rendered for ``scanned_pdf = "images"``: the long side in pixels.
RENDER_SIDE = 2048

Detail = Literal["auto", "low", "high"]
ScannedPdf = Literal["file", "images", "refuse"]

_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)$", re.DOTALL)


@dataclass(frozen=True)
class Attachment:
    """One image, or one PDF without a text layer, belonging to a document."""

    kind: Literal["image", "pdf"]
    media_type: str
    filename: str
    data: bytes
    #: Pixels for an image; the first page's size in pixels at render size for a PDF.
    width: int
    height: int
    pages: int = 1

    @cached_property
    def digest(self) -> str:
        """SHA-256 of the bytes: part of the document's content hash."""
        return hashlib.sha256(self.data).hexdigest()

    def data_url(self) -> str:
        """The bytes as a ``data:`` URL."""
        return f"data:{self.media_type};base64,{base64.b64encode(self.data).decode('ascii')}"


def image_tokens(width: int, height: int, detail: Detail = "auto") -> int:
    """Input tokens of one image: 85, plus 170 per 512-pixel tile at high detail.

    The model fits the image in 2,048 x 2,048, then scales its short side down to 768, and
    counts 512-pixel tiles. ``low`` is a flat 85; ``auto`` is counted as ``high``, the
    larger of the two, so estimates never fall short.
    """
    if detail == "low":
        return 85
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)


def prepare_image(source: str, data: bytes, media_type: str, *,
                  max_side: int = MAX_IMAGE_SIDE, max_bytes: int = MAX_IMAGE_BYTES
                  ) -> Attachment:
    """Check an image and scale it down to what the model uses.

    Animated GIFs keep their first frame (the API takes still images only). An image still
    above ``max_bytes`` after scaling is re-encoded as JPEG.

    Raises:
        DocumentError: ``corrupt_file``, ``too_large`` (pixels or bytes).
    """
    from PIL import Image, UnidentifiedImageError

    filename = source.rsplit("/", 1)[-1]
    try:
        with warnings.catch_warnings():
            # Pillow warns past 89M pixels and refuses past twice that; the limit is ours.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            probe = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise DocumentError(source, f"the image has too many pixels: {exc}",
                            code="too_large") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DocumentError(source, f"not a readable image: {exc}", code="corrupt_file") from exc
    try:
        with probe:
            width, height = probe.size
            declared = _FORMATS.get(media_type)
            if width * height > MAX_IMAGE_PIXELS:
                raise DocumentError(source, f"the image is {width}x{height} pixels, above the "
                                    f"limit of {MAX_IMAGE_PIXELS}", code="too_large")
            animated = getattr(probe, "n_frames", 1) > 1
            if probe.format == declared and not animated and max(width, height) <= max_side \
                    and len(data) <= max_bytes:
                probe.verify()
                return Attachment("image", media_type, filename, data, width, height)
            probe.seek(0)
            image = probe.convert("RGBA" if probe.mode in ("RGBA", "LA", "P") else "RGB")
    except DocumentError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise DocumentError(source, f"not a readable image: {exc}", code="corrupt_file") from exc
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out_type = media_type if media_type in ("image/png", "image/jpeg", "image/webp") \
        else "image/png"
    encoded = _encode(image, out_type)
    if len(encoded) > max_bytes:
        out_type, encoded = "image/jpeg", _encode(image, "image/jpeg")
    if len(encoded) > max_bytes:
        raise DocumentError(source, f"the image is {len(encoded)} bytes even as a "
                            f"{image.size[0]}x{image.size[1]} JPEG, above the limit of "
                            f"{max_bytes}", code="too_large")
    return Attachment("image", out_type, filename, encoded, image.size[0], image.size[1])


def _encode(image: Any, media_type: str) -> bytes:
    buffer = io.BytesIO()
    if media_type == "image/jpeg":
        image.convert("RGB").save(buffer, "JPEG", quality=85, optimize=True)
    else:
        image.save(buffer, _FORMATS[media_type], optimize=True)
    return buffer.getvalue()


def scanned_pdf(source: str, data: bytes, pages: int, first_page: tuple[float, float], *,
                max_bytes: int = MAX_PDF_BYTES, max_pages: int = MAX_PDF_PAGES) -> Attachment:
    """A PDF with no text layer, kept whole to be sent as a file or rendered to images.

    ``first_page`` is the first page's size in points; it sets the estimate of a page's
    image tokens.

    Raises:
        DocumentError: ``too_large`` past the API's limits on a PDF in one request.
    """
    if pages > max_pages:
        raise DocumentError(source, f"the PDF has no text layer and {pages} pages; the model "
                            f"reads at most {max_pages} pages of a PDF", code="too_large")
    if len(data) > max_bytes:
        raise DocumentError(source, f"the PDF has no text layer and is {len(data)} bytes; the "
                            f"model reads PDFs of at most {max_bytes} bytes", code="too_large")
    width, height = _render_size(*first_page)
    return Attachment("pdf", "application/pdf", source.rsplit("/", 1)[-1], data, width,
                      height, pages)


def _render_size(width_pt: float, height_pt: float) -> tuple[int, int]:
    scale = RENDER_SIDE / max(width_pt, height_pt, 1.0)
    return max(1, round(width_pt * scale)), max(1, round(height_pt * scale))


def render_pages(attachment: Attachment) -> list[Attachment]:
    """Each page of a PDF as a JPEG whose long side is :data:`RENDER_SIDE` pixels.

    Raises:
        DocumentError: ``corrupt_file`` when the PDF cannot be rendered.
    """
    import pypdfium2

    try:
        pdf = pypdfium2.PdfDocument(attachment.data)
    except pypdfium2.PdfiumError as exc:
        raise DocumentError(attachment.filename, f"cannot render the PDF: {exc}",
                            code="corrupt_file") from exc
    try:
        images = []
        for number in range(len(pdf)):
            page = pdf[number]
            width, height = page.get_size()
            scale = RENDER_SIDE / max(width, height, 1.0)
            image = page.render(scale=scale, grayscale=True).to_pil()
            images.append(Attachment(
                "image", "image/jpeg", f"{attachment.filename}#page={number + 1}",
                _encode(image, "image/jpeg"), image.size[0], image.size[1]))
        return images
    finally:
        pdf.close()


def content_parts(attachments: tuple[Attachment, ...], *, scanned: ScannedPdf = "file",
                  detail: Detail = "auto") -> list[dict[str, Any]]:
    """The ``input_image`` and ``input_file`` parts of a request for ``attachments``.

    Raises:
        DocumentError: ``no_text_layer`` for a scanned PDF when ``scanned`` is ``refuse``.
    """
    parts: list[dict[str, Any]] = []
    for attachment in attachments:
        if attachment.kind == "image":
            parts.append(_image_part(attachment, detail))
        elif scanned == "images":
            parts.extend(_image_part(page, detail) for page in render_pages(attachment))
        elif scanned == "file":
            parts.append({"type": "input_file", "filename": attachment.filename,
                          "file_data": attachment.data_url()})
        else:
            raise DocumentError(attachment.filename, "the PDF has no text layer (scanned?) and "
                                "the pipeline does not send scans", code="no_text_layer")
    return parts


def _image_part(attachment: Attachment, detail: Detail) -> dict[str, Any]:
    return {"type": "input_image", "image_url": attachment.data_url(), "detail": detail}


def attachment_tokens(attachment: Attachment, *, detail: Detail = "auto") -> int:
    """Estimated input tokens of an attachment however it is sent: one image per page."""
    return attachment.pages * image_tokens(attachment.width, attachment.height, detail)


def decode_data_url(url: str) -> tuple[str, bytes]:
    """The media type and bytes of a base64 ``data:`` URL.

    Raises:
        ValueError: the URL is not a base64 data URL.
    """
    match = _DATA_URL.match(url)
    if match is None:
        raise ValueError("not a base64 data URL")
    try:
        return match["type"], base64.b64decode(match["data"], validate=True)
    except binascii.Error as exc:
        raise ValueError(f"bad base64: {exc}") from exc


def part_tokens(part: dict[str, Any]) -> int:
    """Estimated input tokens of one ``input_image`` or ``input_file`` part of a request.

    Counts what the API would see: an image by its tiles; a PDF as one page image per page
    (the API sends the model each page's image and its text, and a scan has no text).
    Unreadable parts count 0: the API refuses them before charging.
    """
    from PIL import Image

    detail: Detail = "low" if part.get("detail") == "low" else "auto"
    try:
        if part.get("type") == "input_image":
            _, data = decode_data_url(str(part.get("image_url", "")))
            with Image.open(io.BytesIO(data)) as image:
                return image_tokens(*image.size, detail)
        if part.get("type") == "input_file":
            _, data = decode_data_url(str(part.get("file_data", "")))
            pages, first = pdf_pages(data)
            return pages * image_tokens(*_render_size(*first), detail)
    except (ValueError, OSError, DocumentError):
        return 0
    return 0


def pdf_pages(data: bytes) -> tuple[int, tuple[float, float]]:
    """How many pages a PDF has, and its first page's size in points.

    Raises:
        DocumentError: ``corrupt_file``.
    """
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        box = reader.pages[0].mediabox
        return len(reader.pages), (float(box.width), float(box.height))
    except Exception as exc:  # pypdf raises arbitrary exceptions on broken files
        raise DocumentError("(pdf)", f"not a readable PDF: {exc}", code="corrupt_file") from exc
