"""How the simulator counts a request's tokens, as the API bills them, with no help from docpipe.

Text is counted with the o200k_base encoding (``bpe-openai``, offline): the instructions,
every input text, and the output schema, which the API adds to the system message, with a
few tokens of framing per part. An image costs 85 tokens, plus 170 for each 512-pixel tile
once it is fitted in 2,048 x 2,048 and its short side scaled to 768 (``detail: low``: a flat
85). A PDF costs one page image per page, each page at 2,048 pixels on its long side. The
admission charge against a TPM limit is the API's character estimate (the input's JSON
length / 4, media bytes left out).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
import warnings
from functools import lru_cache
from typing import Any, Protocol, cast

#: Tokens of framing for each part of the prompt (instructions, a message, the schema).
FRAMING = 4
_SEGMENT = 400_000  # bpe-openai encodes under a million characters at once
_MEDIA = ("input_image", "input_file")
_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)$", re.DOTALL)


class _Encoding(Protocol):
    def encode(self, text: str) -> list[int]: ...


@lru_cache(maxsize=1)
def _o200k() -> _Encoding:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "open_binary is deprecated", DeprecationWarning)
        import bpe_openai

        return cast(_Encoding, bpe_openai.get_encoding("o200k_base"))


def count(text: str) -> int:
    """Tokens of ``text`` in o200k_base, of any length (long texts are cut at spaces)."""
    total, start = 0, 0
    while start < len(text):
        end = min(len(text), start + _SEGMENT)
        if end < len(text):
            cut = text.rfind(" ", start + _SEGMENT // 2, end)
            end = cut if cut > start else end
        total += len(_o200k().encode(text[start:end]))
        start = end
    return total


def input_tokens(body: dict[str, Any]) -> int:
    """The input tokens the API bills for ``body``."""
    texts = [str(body["instructions"])] if body.get("instructions") else []
    messages = body.get("input")
    texts += [messages] if isinstance(messages, str) else [
        text for message in _list(messages) for text in _message_texts(message)]
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_schema":
        texts.append(json.dumps(fmt.get("schema", {}), separators=(",", ":")))
    media = sum(part_tokens(part) for part in media_parts(body))
    return sum(count(t) for t in texts) + FRAMING * (1 + len(texts)) + media


def admission_estimate(body: dict[str, Any]) -> int:
    """The API's estimate of a request's input before it runs: its JSON length / 4, with
    image and file bytes left out (they are counted by their pixels)."""
    value = body.get("input", "")
    if media_parts(body):
        value = [message | {"content": [
            {k: v for k, v in part.items() if k not in ("image_url", "file_data")}
            if isinstance(part, dict) and part.get("type") in _MEDIA else part
            for part in message["content"]]}
            if isinstance(message, dict) and isinstance(message.get("content"), list)
            else message for message in value]
    return math.ceil(len(json.dumps(value)) / 4)


def media_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The input's image and file parts."""
    return [part for message in _list(body.get("input")) if isinstance(message, dict)
            for part in _list(message.get("content"))
            if isinstance(part, dict) and part.get("type") in _MEDIA]


def part_tokens(part: dict[str, Any]) -> int:
    """Tokens of one image or PDF part; 0 for one the API cannot read (it refuses those)."""
    from PIL import Image

    low = part.get("detail") == "low"
    try:
        if part.get("type") == "input_image":
            _, data = decode_data_url(str(part.get("image_url", "")))
            with Image.open(io.BytesIO(data)) as image:
                return image_tokens(*image.size, low=low)
        _, data = decode_data_url(str(part.get("file_data", "")))
        pages, (width, height) = pdf_pages(data)
    except (ValueError, OSError):
        return 0
    scale = 2048 / max(width, height, 1.0)
    return pages * image_tokens(max(1, round(width * scale)), max(1, round(height * scale)),
                                low=low)


def image_tokens(width: int, height: int, *, low: bool = False) -> int:
    """Tokens of one image: 85, plus 170 per 512-pixel tile of the image the model sees."""
    if low:
        return 85
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        w, h = w * 2048 / max(w, h), h * 2048 / max(w, h)
    if min(w, h) > 768:
        w, h = w * 768 / min(w, h), h * 768 / min(w, h)
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)


def decode_data_url(url: str) -> tuple[str, bytes]:
    """The media type and bytes of a base64 ``data:`` URL.

    Raises:
        ValueError: it is not one.
    """
    match = _DATA_URL.match(url)
    if match is None:
        raise ValueError("not a base64 data URL")
    try:
        return match["type"], base64.b64decode(match["data"], validate=True)
    except binascii.Error as exc:
        raise ValueError(f"bad base64: {exc}") from exc


def pdf_pages(data: bytes) -> tuple[int, tuple[float, float]]:
    """A PDF's page count and its first page's size in points.

    Raises:
        ValueError: it is not a PDF pypdf can read.
    """
    from pypdf import PdfReader

    if not data.startswith(b"%PDF"):
        raise ValueError("not a PDF")
    try:
        reader = PdfReader(io.BytesIO(data))
        box = reader.pages[0].mediabox
        return len(reader.pages), (float(box.width), float(box.height))
    except Exception as exc:  # pypdf raises anything on a broken file
        raise ValueError(f"not a readable PDF: {exc}") from exc


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _message_texts(message: Any) -> list[str]:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return [content]
    return [str(part["text"]) for part in _list(content)
            if isinstance(part, dict) and "text" in part]
