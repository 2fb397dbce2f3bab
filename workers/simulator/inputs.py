"""What a request's input holds, as the simulator reads it: its text, its identity (how the
stats count calls per document), and the images and files the API refuses."""

from __future__ import annotations

import hashlib
import io
from typing import Any

from aiohttp import web

from workers.simulator.usage import decode_data_url, pdf_pages
from workers.simulator.wire import error as _error

#: The API's cap on a request's images and files together.
MAX_MEDIA_PAYLOAD = 50 * 1024 * 1024
#: The API's caps on one image, and on one PDF: 20 MB; 100 pages and 32 MB.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_PDF_PAGES = 100
MAX_PDF_BYTES = 32 * 1024 * 1024
_IMAGE_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP",
                  "image/gif": "GIF"}
_UNSUPPORTED_IMAGE = ("You uploaded an unsupported image. Please make sure your image is below "
                      "20 MB in size and is of one the following formats: ['png', 'jpeg', "
                      "'gif', 'webp'].")


def input_key(body: dict[str, Any]) -> str:
    """Identity of a request's user input: how the stats count calls per document."""
    return hashlib.sha256("\n".join(_input_texts(body)).encode()).hexdigest()[:16]


def _input_texts(body: dict[str, Any]) -> list[str]:
    """The input's text parts, with each image or file as ``[image <sha256 prefix>]``."""
    texts: list[str] = []
    value = body.get("input")
    if isinstance(value, str):
        texts.append(value)
    elif isinstance(value, list):
        for message in value:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts.extend(_part_text(p) for p in content if isinstance(p, dict))
    return texts


def _part_text(part: dict[str, Any]) -> str:
    media = part.get("image_url") or part.get("file_data")
    if media is None:
        return str(part.get("text", ""))
    kind = "image" if part.get("type") == "input_image" else "file"
    return f"[{kind} {hashlib.sha256(str(media).encode()).hexdigest()[:12]}]"


def media_error(body: dict[str, Any]) -> web.Response | None:
    """The API's 400 for an image or file it cannot take, else None."""
    total = 0
    value = body.get("input")
    messages = value if isinstance(value, list) else []
    for m, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        for p, part in enumerate(content if isinstance(content, list) else []):
            kind = part.get("type") if isinstance(part, dict) else None
            where = f"input[{m}].content[{p}]"
            if kind == "input_image":
                try:
                    media_type, data = decode_data_url(str(part.get("image_url", "")))
                except ValueError:
                    return _error(400, f"Invalid '{where}.image_url'. Expected a base64-encoded "
                                  "data URL with an image MIME type.", "invalid_request_error",
                                  "invalid_image_url", f"{where}.image_url")
                if media_type not in _IMAGE_FORMATS or len(data) > MAX_IMAGE_BYTES or \
                        not _is_image(data, _IMAGE_FORMATS[media_type]):
                    return _error(400, _UNSUPPORTED_IMAGE, "invalid_request_error",
                                  "invalid_image_format", f"{where}.image_url")
                total += len(data)
            elif kind == "input_file":
                if not part.get("filename"):
                    return _error(400, f"Missing required parameter: '{where}.filename'.",
                                  "invalid_request_error", "missing_required_parameter",
                                  f"{where}.filename")
                try:
                    _, data = decode_data_url(str(part.get("file_data", "")))
                    pages = pdf_pages(data)[0]
                except ValueError:
                    pages = -1
                if pages < 0:
                    return _error(400, f"Invalid '{where}.file_data': the file could not be "
                                  "parsed as a PDF.", "invalid_request_error", "invalid_file",
                                  f"{where}.file_data")
                if pages > MAX_PDF_PAGES or len(data) > MAX_PDF_BYTES:
                    return _error(400, f"Invalid '{where}.file_data': PDFs may have at most "
                                  f"{MAX_PDF_PAGES} pages and {MAX_PDF_BYTES} bytes.",
                                  "invalid_request_error", "file_too_large",
                                  f"{where}.file_data")
                total += len(data)
    if total > MAX_MEDIA_PAYLOAD:
        return _error(400, f"The request's images and files total {total} bytes, above the "
                      f"limit of {MAX_MEDIA_PAYLOAD}.", "invalid_request_error",
                      "request_too_large", "input")
    return None


def _is_image(data: bytes, fmt: str) -> bool:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            return image.format == fmt
    except Exception:
        return False


def document_text(body: dict[str, Any]) -> str:
    text = "\n".join(_input_texts(body))
    start, end = text.find("<document>"), text.rfind("</document>")
    if start != -1 and end > start:
        return text[start + len("<document>") : end].strip()
    return text
